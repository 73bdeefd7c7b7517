import qrcode from "qrcode-generator";
import { useMemo } from "react";

/** `text` as a QR code (an SVG drawn from the modules, no HTML injected), for a
 * phone's camera: e.g. an otpauth:// URI for an authenticator app. */
export function QrCode({ text, label, size = 184 }: { text: string; label: string; size?: number }) {
  const { path, count } = useMemo(() => {
    const code = qrcode(0, "M");
    code.addData(text);
    code.make();
    const count = code.getModuleCount();
    let path = "";
    for (let row = 0; row < count; row += 1) {
      for (let col = 0; col < count; col += 1) {
        if (code.isDark(row, col)) path += `M${col + 4} ${row + 4}h1v1h-1z`;
      }
    }
    return { path, count };
  }, [text]);
  const extent = count + 8; // a quiet zone of 4 modules on every side
  return (
    <svg
      className="qr"
      role="img"
      aria-label={label}
      width={size}
      height={size}
      viewBox={`0 0 ${extent} ${extent}`}
      shapeRendering="crispEdges"
      data-testid="totp-qr"
    >
      <rect width={extent} height={extent} fill="#fff" />
      <path d={path} fill="#000" />
    </svg>
  );
}
