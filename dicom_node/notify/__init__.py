"""Critical-finding alerts (webhook JSON, HL7 ORU over MLLP) as rows, sent with retries by `serve`."""
