"""Studies: assembling received instances into studies, the study state, triage order, retention, and the
read model of studies for `status` and the dashboard."""
