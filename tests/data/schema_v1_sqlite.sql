-- The schema of the previous release (commit dd7eb10: db/migrations.py at schema_version 1), dumped with
-- sqlite3 .schema from a database it created: tests/test_migrations.py builds an old database from it.

CREATE TABLE associations (
	id VARCHAR(36) NOT NULL, 
	owner VARCHAR(128), 
	calling_ae VARCHAR(16) NOT NULL, 
	peer_address VARCHAR(64) NOT NULL, 
	started_at DATETIME NOT NULL, 
	ended_at DATETIME, 
	released BOOLEAN NOT NULL, 
	n_stored INTEGER NOT NULL, 
	PRIMARY KEY (id)
);
CREATE TABLE studies (
	id INTEGER NOT NULL, 
	study_uid VARCHAR(64) NOT NULL, 
	patient_id VARCHAR(64) NOT NULL, 
	accession_number VARCHAR(16) NOT NULL, 
	study_date VARCHAR(8) NOT NULL, 
	state VARCHAR(16) NOT NULL, 
	generation INTEGER NOT NULL, 
	priority INTEGER NOT NULL, 
	first_received_at DATETIME NOT NULL, 
	last_received_at DATETIME NOT NULL, 
	completed_at DATETIME, 
	pixels_deleted_at DATETIME, 
	last_association_id VARCHAR(36), 
	PRIMARY KEY (id), 
	UNIQUE (study_uid)
);
CREATE INDEX ix_studies_state ON studies (state);
CREATE INDEX ix_studies_last_received_at ON studies (last_received_at);
CREATE TABLE users (
	id INTEGER NOT NULL, 
	name VARCHAR(64) NOT NULL, 
	role VARCHAR(16) NOT NULL, 
	password_hash TEXT NOT NULL, 
	created_at DATETIME NOT NULL, 
	disabled BOOLEAN NOT NULL, 
	PRIMARY KEY (id), 
	UNIQUE (name)
);
CREATE TABLE audit_events (
	id INTEGER NOT NULL, 
	at DATETIME NOT NULL, 
	kind VARCHAR(32) NOT NULL, 
	actor VARCHAR(64) NOT NULL, 
	peer VARCHAR(64) NOT NULL, 
	subject VARCHAR(128) NOT NULL, 
	detail TEXT NOT NULL, 
	"before" TEXT NOT NULL, 
	"after" TEXT NOT NULL, 
	PRIMARY KEY (id)
);
CREATE INDEX ix_audit_events_kind ON audit_events (kind);
CREATE INDEX ix_audit_events_at ON audit_events (at);
CREATE TABLE radiology_reports (
	id INTEGER NOT NULL, 
	source VARCHAR(16) NOT NULL, 
	source_key VARCHAR(255) NOT NULL, 
	match_key VARCHAR(80) NOT NULL, 
	accession_number VARCHAR(64) NOT NULL, 
	study_uid VARCHAR(64) NOT NULL, 
	patient_id VARCHAR(64) NOT NULL, 
	status VARCHAR(8) NOT NULL, 
	reported_at DATETIME, 
	received_at DATETIME NOT NULL, 
	text TEXT NOT NULL, 
	superseded_by INTEGER, 
	superseded_at DATETIME, 
	PRIMARY KEY (id), 
	UNIQUE (source_key), 
	FOREIGN KEY(superseded_by) REFERENCES radiology_reports (id)
);
CREATE INDEX ix_radiology_reports_study_uid ON radiology_reports (study_uid);
CREATE INDEX ix_radiology_reports_received_at ON radiology_reports (received_at);
CREATE INDEX ix_radiology_reports_accession_number ON radiology_reports (accession_number);
CREATE INDEX ix_radiology_reports_superseded_by ON radiology_reports (superseded_by);
CREATE INDEX ix_radiology_reports_match_key ON radiology_reports (match_key);
CREATE TABLE report_rejections (
	id INTEGER NOT NULL, 
	received_at DATETIME NOT NULL, 
	source VARCHAR(255) NOT NULL, 
	control_id VARCHAR(64) NOT NULL, 
	reason TEXT NOT NULL, 
	raw TEXT NOT NULL, 
	PRIMARY KEY (id)
);
CREATE INDEX ix_report_rejections_received_at ON report_rejections (received_at);
CREATE TABLE monitor_alerts (
	id INTEGER NOT NULL, 
	model_name VARCHAR(64) NOT NULL, 
	model_version VARCHAR(64) NOT NULL, 
	label VARCHAR(64) NOT NULL, 
	metric VARCHAR(16) NOT NULL, 
	value FLOAT NOT NULL, 
	floor FLOAT NOT NULL, 
	cases INTEGER NOT NULL, 
	window_days FLOAT NOT NULL, 
	state VARCHAR(16) NOT NULL, 
	body TEXT NOT NULL, 
	cleared_at DATETIME, 
	attempts INTEGER NOT NULL, 
	next_attempt_at DATETIME NOT NULL, 
	last_error TEXT NOT NULL, 
	created_at DATETIME NOT NULL, 
	sent_at DATETIME, 
	PRIMARY KEY (id)
);
CREATE UNIQUE INDEX uq_monitor_alert_open ON monitor_alerts (model_name, model_version, label, metric) WHERE cleared_at IS NULL;
CREATE TABLE series (
	id INTEGER NOT NULL, 
	study_id INTEGER NOT NULL, 
	series_uid VARCHAR(64) NOT NULL, 
	modality VARCHAR(16) NOT NULL, 
	series_number INTEGER, 
	series_description VARCHAR(64) NOT NULL, 
	body_part VARCHAR(16) NOT NULL, 
	PRIMARY KEY (id), 
	FOREIGN KEY(study_id) REFERENCES studies (id), 
	UNIQUE (series_uid)
);
CREATE INDEX ix_series_study_id ON series (study_id);
CREATE TABLE jobs (
	id INTEGER NOT NULL, 
	study_id INTEGER NOT NULL, 
	generation INTEGER NOT NULL, 
	model_name VARCHAR(64) NOT NULL, 
	state VARCHAR(16) NOT NULL, 
	priority INTEGER NOT NULL, 
	attempts INTEGER NOT NULL, 
	max_attempts INTEGER NOT NULL, 
	run_after DATETIME NOT NULL, 
	lease_expires_at DATETIME, 
	lease_expiries INTEGER DEFAULT 0 NOT NULL, 
	worker_id VARCHAR(64), 
	last_error TEXT NOT NULL, 
	created_at DATETIME NOT NULL, 
	updated_at DATETIME NOT NULL, 
	PRIMARY KEY (id), 
	CONSTRAINT uq_job_study_generation_model UNIQUE (study_id, generation, model_name), 
	FOREIGN KEY(study_id) REFERENCES studies (id)
);
CREATE INDEX ix_jobs_study_id ON jobs (study_id);
CREATE INDEX ix_job_claim ON jobs (state, priority, run_after);
CREATE UNIQUE INDEX uq_job_queued_per_study_model ON jobs (study_id, model_name) WHERE state = 'queued';
CREATE TABLE notifications (
	id INTEGER NOT NULL, 
	study_id INTEGER NOT NULL, 
	target VARCHAR(16) NOT NULL, 
	state VARCHAR(16) NOT NULL, 
	body TEXT NOT NULL, 
	control_id VARCHAR(20) NOT NULL, 
	attempts INTEGER NOT NULL, 
	next_attempt_at DATETIME NOT NULL, 
	last_error TEXT NOT NULL, 
	created_at DATETIME NOT NULL, 
	sent_at DATETIME, 
	claimed_by VARCHAR(128), 
	lease_until DATETIME, 
	PRIMARY KEY (id), 
	CONSTRAINT uq_notification_study_target UNIQUE (study_id, target), 
	FOREIGN KEY(study_id) REFERENCES studies (id)
);
CREATE INDEX ix_notification_due ON notifications (state, next_attempt_at);
CREATE INDEX ix_notifications_study_id ON notifications (study_id);
CREATE TABLE web_sessions (
	id VARCHAR(64) NOT NULL, 
	user_id INTEGER NOT NULL, 
	csrf_token VARCHAR(64) NOT NULL, 
	created_at DATETIME NOT NULL, 
	expires_at DATETIME NOT NULL, 
	PRIMARY KEY (id), 
	FOREIGN KEY(user_id) REFERENCES users (id)
);
CREATE INDEX ix_web_sessions_expires_at ON web_sessions (expires_at);
CREATE INDEX ix_web_sessions_user_id ON web_sessions (user_id);
CREATE TABLE login_tokens (
	id VARCHAR(64) NOT NULL, 
	user_id INTEGER NOT NULL, 
	expires_at DATETIME NOT NULL, 
	used_at DATETIME, 
	PRIMARY KEY (id), 
	FOREIGN KEY(user_id) REFERENCES users (id)
);
CREATE INDEX ix_login_tokens_user_id ON login_tokens (user_id);
CREATE TABLE report_labels (
	id INTEGER NOT NULL, 
	report_id INTEGER NOT NULL, 
	model_name VARCHAR(64) NOT NULL, 
	model_version VARCHAR(64) NOT NULL, 
	manifest_sha256 VARCHAR(64) NOT NULL, 
	probabilities JSON NOT NULL, 
	positive JSON NOT NULL, 
	created_at DATETIME NOT NULL, 
	PRIMARY KEY (id), 
	CONSTRAINT uq_report_label_model UNIQUE (report_id, model_name, model_version), 
	FOREIGN KEY(report_id) REFERENCES radiology_reports (id)
);
CREATE INDEX ix_report_labels_report_id ON report_labels (report_id);
CREATE TABLE instances (
	id INTEGER NOT NULL, 
	study_id INTEGER NOT NULL, 
	series_id INTEGER NOT NULL, 
	sop_instance_uid VARCHAR(64) NOT NULL, 
	sop_class_uid VARCHAR(64) NOT NULL, 
	transfer_syntax_uid VARCHAR(64) NOT NULL, 
	path TEXT NOT NULL, 
	size BIGINT NOT NULL, 
	instance_number INTEGER, 
	image_type VARCHAR(128) NOT NULL, 
	image_orientation VARCHAR(128) NOT NULL, 
	image_position VARCHAR(128) NOT NULL, 
	slice_thickness FLOAT, 
	contrast_agent VARCHAR(64) NOT NULL, 
	rows INTEGER, 
	columns INTEGER, 
	convolution_kernel VARCHAR(64) NOT NULL, 
	calling_ae VARCHAR(16) NOT NULL, 
	association_id VARCHAR(36), 
	received_at DATETIME NOT NULL, 
	PRIMARY KEY (id), 
	FOREIGN KEY(study_id) REFERENCES studies (id), 
	FOREIGN KEY(series_id) REFERENCES series (id), 
	UNIQUE (sop_instance_uid)
);
CREATE INDEX ix_instances_study_id ON instances (study_id);
CREATE INDEX ix_instances_series_id ON instances (series_id);
CREATE TABLE results (
	id INTEGER NOT NULL, 
	job_id INTEGER NOT NULL, 
	study_id INTEGER NOT NULL, 
	model_name VARCHAR(64) NOT NULL, 
	model_version VARCHAR(64) NOT NULL, 
	status VARCHAR(16) NOT NULL, 
	critical BOOLEAN NOT NULL, 
	payload JSON NOT NULL, 
	created_at DATETIME NOT NULL, 
	PRIMARY KEY (id), 
	UNIQUE (job_id), 
	FOREIGN KEY(job_id) REFERENCES jobs (id), 
	FOREIGN KEY(study_id) REFERENCES studies (id)
);
CREATE INDEX ix_results_study_id ON results (study_id);
CREATE TABLE outputs (
	id INTEGER NOT NULL, 
	study_id INTEGER NOT NULL, 
	result_id INTEGER NOT NULL, 
	kind VARCHAR(16) NOT NULL, 
	sop_class_uid VARCHAR(64) NOT NULL, 
	sop_instance_uid VARCHAR(64) NOT NULL, 
	series_uid VARCHAR(64) NOT NULL, 
	path TEXT NOT NULL, 
	created_at DATETIME NOT NULL, 
	PRIMARY KEY (id), 
	FOREIGN KEY(study_id) REFERENCES studies (id), 
	FOREIGN KEY(result_id) REFERENCES results (id), 
	UNIQUE (sop_instance_uid)
);
CREATE INDEX ix_outputs_result_id ON outputs (result_id);
CREATE INDEX ix_outputs_study_id ON outputs (study_id);
CREATE TABLE deliveries (
	id INTEGER NOT NULL, 
	output_id INTEGER NOT NULL, 
	destination VARCHAR(64) NOT NULL, 
	state VARCHAR(16) NOT NULL, 
	attempts INTEGER NOT NULL, 
	next_attempt_at DATETIME NOT NULL, 
	last_error TEXT NOT NULL, 
	created_at DATETIME NOT NULL, 
	sent_at DATETIME, 
	claimed_by VARCHAR(128), 
	lease_until DATETIME, 
	PRIMARY KEY (id), 
	CONSTRAINT uq_delivery_output_destination UNIQUE (output_id, destination), 
	FOREIGN KEY(output_id) REFERENCES outputs (id)
);
CREATE INDEX ix_delivery_due ON deliveries (state, next_attempt_at);
CREATE INDEX ix_deliveries_output_id ON deliveries (output_id);
CREATE TABLE schema_version (version INTEGER NOT NULL);
