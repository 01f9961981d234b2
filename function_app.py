"""Timbre's Functions app: builds the app and registers one blueprint per domain."""

import azure.durable_functions as df

from functions import (
    agents,
    audit,
    fallback,
    health,
    ingestion,
    synthesis,
    synthesis_jobs,
    training,
    translation,
    voices,
)

app = df.DFApp()

app.register_functions(health.bp)
app.register_functions(agents.bp)
app.register_functions(audit.bp)
app.register_functions(ingestion.bp)
app.register_functions(voices.bp)
app.register_functions(training.bp)
app.register_functions(synthesis.bp)
app.register_functions(translation.bp)
app.register_functions(synthesis_jobs.bp)
app.register_functions(fallback.bp)  # last: the catch-all route
