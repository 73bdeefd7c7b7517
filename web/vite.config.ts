import react from "@vitejs/plugin-react";
import { defineConfig } from "vite";

// Two pages: the app (index.html) and the self-hosted GraphiQL (graphiql.html). Every
// asset gets a content hash in its name, so the server may cache /assets/* forever.
export default defineConfig({
  plugins: [react()],
  base: "/",
  build: {
    outDir: "dist",
    emptyOutDir: true,
    assetsDir: "assets",
    // No data: URLs for fonts or images: the CSP allows only 'self'.
    assetsInlineLimit: 0,
    chunkSizeWarningLimit: 4000,
    rollupOptions: {
      input: { app: "index.html", graphiql: "graphiql.html" },
      onwarn(warning, warn) {
        // GraphiQL's React-compiler directives ("use no memo"): harmless when bundled.
        if (warning.code === "MODULE_LEVEL_DIRECTIVE") return;
        warn(warning);
      },
    },
  },
  server: {
    proxy: { "/graphql": { target: "http://127.0.0.1:8000", ws: true } },
  },
});
