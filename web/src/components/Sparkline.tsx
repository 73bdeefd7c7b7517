/** A price line drawn as SVG (no canvas per row: the markets table has many). */
export function Sparkline({ points, width = 120, height = 32 }: { points: { value: number }[]; width?: number; height?: number }) {
  if (points.length < 2) return <svg className="spark" width={width} height={height} aria-hidden="true" />;
  const values = points.map((p) => p.value);
  const min = Math.min(...values);
  const max = Math.max(...values);
  const span = max - min || 1;
  const step = width / (points.length - 1);
  const path = values
    .map((v, i) => `${i === 0 ? "M" : "L"}${(i * step).toFixed(1)},${(height - 2 - ((v - min) / span) * (height - 4)).toFixed(1)}`)
    .join(" ");
  const rising = values[values.length - 1] >= values[0];
  return (
    <svg className={`spark ${rising ? "up" : "down"}`} width={width} height={height} viewBox={`0 0 ${width} ${height}`} aria-label={rising ? "rising" : "falling"}>
      <path d={path} fill="none" strokeWidth="1.5" stroke="currentColor" />
    </svg>
  );
}
