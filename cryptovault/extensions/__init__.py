"""The GraphQL pipeline around every operation, one Strawberry extension (or the
machinery one uses) per module:

- `parsing`: `Parsing`, `Validation` - cached parse and validation at the caller's cost;
- `limits`: `Protection` - introspection policy, shape limits, static cost against
  MAX_QUERY_COST, the cost budget and the `extensions.cost` report;
- `cost`: the cost rules and the static/actual cost analysis `limits` uses;
- `introspection`: plain introspection answered from one cached result;
- `persisted`: automatic persisted queries and trusted documents;
- `metrics`: `OperationMetrics` - per-operation metrics and access-log fields;
- `masking`: `ErrorMapping` - stable `extensions.code`, unexpected errors masked;
- `caches`: the bounded caches the extensions keep per document.
"""
