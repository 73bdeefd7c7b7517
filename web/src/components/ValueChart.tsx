import { AreaSeries, createChart, type ISeriesApi, type UTCTimestamp } from "lightweight-charts";
import { useEffect, useRef } from "react";
import { ChartCredit } from "./ChartCredit";
import { chartOptions, toTime, UP } from "./charts";

/** The portfolio's value over time. */
export function ValueChart({ points }: { points: { at: string; value: string }[] }) {
  const box = useRef<HTMLDivElement>(null);
  const series = useRef<ISeriesApi<"Area"> | null>(null);

  useEffect(() => {
    if (!box.current) return;
    const chart = createChart(box.current, { ...chartOptions, timeScale: { ...chartOptions.timeScale, secondsVisible: true } });
    series.current = chart.addSeries(AreaSeries, {
      lineColor: UP,
      topColor: "rgba(61, 214, 140, 0.35)",
      bottomColor: "rgba(61, 214, 140, 0.02)",
      lineWidth: 2,
    });
    return () => {
      chart.remove();
      series.current = null;
    };
  }, []);

  useEffect(() => {
    const byTime = new Map<number, number>();
    for (const p of points) byTime.set(toTime(p.at), Number(p.value));
    const data = [...byTime.entries()].sort((a, b) => a[0] - b[0]).map(([time, value]) => ({ time: time as UTCTimestamp, value }));
    series.current?.setData(data);
  }, [points]);

  return (
    <>
      <div className="chart small" ref={box} data-testid="value-chart" data-points={points.length} />
      <div className="chart-status">
        <ChartCredit />
      </div>
    </>
  );
}
