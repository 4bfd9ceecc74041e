"""Delivery of our outputs (SR, overlays) to the configured destinations by C-STORE, with retries."""
