"""Privacy requests: what Timbre holds about a subject (inventory), a copy of it (export,
GDPR Art. 15 and 20) and its removal with a signed receipt (erasure, Art. 17)."""
