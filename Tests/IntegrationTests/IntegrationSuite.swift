// The integration suites share one cluster and start their own agents; they run one at a time.

import Testing

@Suite(.serialized, .enabled(if: TestEnvironment.isAvailable, "needs scripts/test: a PostgreSQL cluster and a built poolagent"))
struct Integration {}
