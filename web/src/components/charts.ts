import { ColorType, type DeepPartial, type ChartOptions, LineStyle } from "lightweight-charts";

/** The charts' look, matching app.css. */
export const chartOptions: DeepPartial<ChartOptions> = {
  autoSize: true,
  layout: {
    background: { type: ColorType.Solid, color: "#111922" },
    textColor: "#93a1b0",
    fontFamily: "Inter, system-ui, sans-serif",
    // The logo injects an inline <style> (refused by the page's CSP); the credit the
    // licence asks for is the <ChartCredit> link under each chart instead.
    attributionLogo: false,
  },
  grid: {
    vertLines: { color: "#1b2631", style: LineStyle.Solid },
    horzLines: { color: "#1b2631", style: LineStyle.Solid },
  },
  rightPriceScale: { borderColor: "#24313d" },
  timeScale: { borderColor: "#24313d", timeVisible: true, secondsVisible: false, rightOffset: 6, barSpacing: 9 },
  crosshair: { mode: 0 },
};

export const UP = "#3dd68c";
export const DOWN = "#f0616d";

export const toTime = (iso: string) => Math.floor(Date.parse(iso) / 1000);
