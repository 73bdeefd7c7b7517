/** The attribution TradingView's licence asks for (in place of the chart's logo). */
export function ChartCredit() {
  return (
    <a className="credit" href="https://www.tradingview.com/lightweight-charts/" target="_blank" rel="noreferrer noopener">
      Charts by TradingView Lightweight Charts™
    </a>
  );
}
