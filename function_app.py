"""Timbre's Functions app: builds the app and registers one blueprint per domain."""

import azure.durable_functions as df

# isort: off
# Import order is the order of the OpenAPI document's paths (each module adds its
# operations to the route table when imported): keep it, so the document stays stable.
from functions import agents, audit, fallback, health
from functions import voices, ingestion, synthesis, translation, synthesis_jobs, training
from functions import chat, realtime, voice_demo, retention, privacy, alerts
# isort: on

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
app.register_functions(chat.bp)
app.register_functions(realtime.bp)
app.register_functions(voice_demo.bp)
app.register_functions(retention.bp)
app.register_functions(privacy.bp)
app.register_functions(alerts.bp)
app.register_functions(fallback.bp)  # last: the catch-all route
