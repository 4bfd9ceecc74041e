"""The database schema: every stage's state lives here, so any process can die and the next one resumes.

Tables, in data-flow order: associations, studies, series, instances (receiver); jobs (assembler →
worker); results (worker); outputs, deliveries (reporter → sender); notifications (triage → notifier);
users, web_sessions, login_tokens (dashboard accounts) and audit_events (who did what); radiology_reports,
report_rejections, report_labels and monitor_alerts (report intake, labels and AI-vs-report monitoring).
Invariants the code relies on are enforced by the database (unique keys, a partial unique index for "one
open job per study and model", a CHECK constraint naming the allowed values of every state and status column).

A change here is also a new Alembic revision in `db/alembic/versions/`, which upgrades databases made by
earlier releases (`db/migrations.py` runs them at start-up and in `dicom-node db upgrade`).
"""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from dicom_node.ml.analysis import AnalysisStatus


class Base(DeclarativeBase):
    """Declarative base of every table below."""


class StudyState(str, enum.Enum):
    RECEIVING = "receiving"  # instances arriving; not yet quiet
    COMPLETE = "complete"  # quiet or released; jobs queued
    ANALYSED = "analysed"  # every job of this generation done or failed; outputs built
    DELIVERED = "delivered"  # every delivery of this generation sent


class Priority(int, enum.Enum):
    ROUTINE = 0
    STAT = 1


class JobState(str, enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class DeliveryState(str, enum.Enum):
    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"


class NotificationState(str, enum.Enum):
    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"
    SKIPPED = "skipped"  # the serve process has no such target configured


def _enum(e: type[enum.Enum]) -> Enum:
    return Enum(e, values_callable=lambda x: [m.value for m in x], native_enum=False, length=16)


def one_of(table: str, column: str, e: type[enum.Enum]) -> CheckConstraint:
    """`ck_<table>_<column>`: the database refuses any value of `column` that is not a member of `e`."""
    values = ", ".join(f"'{m.value}'" for m in e)
    return CheckConstraint(f"{column} IN ({values})", name=f"ck_{table}_{column}")


class Association(Base):
    """One accepted association. `owner` is the serve process that recorded it (`ownership.process_id()`):
    at start-up a node closes only the open associations it or a dead process on its host left behind."""

    __tablename__ = "associations"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)  # uuid4 hex
    owner: Mapped[str | None] = mapped_column(String(128), nullable=True)  # NULL: recorded before owners existed
    calling_ae: Mapped[str] = mapped_column(String(16))
    peer_address: Mapped[str] = mapped_column(String(64))
    started_at: Mapped[datetime] = mapped_column(DateTime)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    released: Mapped[bool] = mapped_column(default=False)  # False and ended: aborted
    n_stored: Mapped[int] = mapped_column(Integer, default=0)


class Study(Base):
    __tablename__ = "studies"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_uid: Mapped[str] = mapped_column(String(64), unique=True)
    patient_id: Mapped[str] = mapped_column(String(64), default="")
    accession_number: Mapped[str] = mapped_column(String(16), default="")
    study_date: Mapped[str] = mapped_column(String(8), default="")
    state: Mapped[StudyState] = mapped_column(_enum(StudyState), default=StudyState.RECEIVING, index=True)
    generation: Mapped[int] = mapped_column(Integer, default=0)  # +1 each time the study completes
    priority: Mapped[int] = mapped_column(Integer, default=Priority.ROUTINE.value)
    first_received_at: Mapped[datetime] = mapped_column(DateTime)
    last_received_at: Mapped[datetime] = mapped_column(DateTime, index=True)
    completed_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    pixels_deleted_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    # retention committed the deletion but some files may still be on disk (`studies/retention.py` unlinks them after
    # the commit and clears this; a failed unlink or a crash leaves it set, and the next pass tries again)
    pixels_unlink_pending: Mapped[bool] = mapped_column(default=False, server_default=false())
    last_association_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    series: Mapped[list[Series]] = relationship(back_populates="study", order_by="Series.series_number")

    __table_args__ = (one_of("studies", "state", StudyState),)


class Series(Base):
    __tablename__ = "series"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    series_uid: Mapped[str] = mapped_column(String(64), unique=True)
    modality: Mapped[str] = mapped_column(String(16), default="")
    series_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    series_description: Mapped[str] = mapped_column(String(64), default="")
    body_part: Mapped[str] = mapped_column(String(16), default="")
    study: Mapped[Study] = relationship(back_populates="series")
    instances: Mapped[list[Instance]] = relationship(back_populates="series", order_by="Instance.instance_number")


class Instance(Base):
    __tablename__ = "instances"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id"), index=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    sop_class_uid: Mapped[str] = mapped_column(String(64))
    transfer_syntax_uid: Mapped[str] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(Text)  # relative to storage.path
    size: Mapped[int] = mapped_column(BigInteger)
    instance_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    image_type: Mapped[str] = mapped_column(String(128), default="")  # backslash-joined
    image_orientation: Mapped[str] = mapped_column(String(128), default="")  # backslash-joined 6 values
    image_position: Mapped[str] = mapped_column(String(128), default="")  # backslash-joined 3 values
    slice_thickness: Mapped[float | None] = mapped_column(Float, nullable=True)
    contrast_agent: Mapped[str] = mapped_column(String(64), default="")  # (0018,0010) Contrast/Bolus Agent
    rows: Mapped[int | None] = mapped_column(Integer, nullable=True)
    columns: Mapped[int | None] = mapped_column(Integer, nullable=True)
    convolution_kernel: Mapped[str] = mapped_column(String(64), default="")
    calling_ae: Mapped[str] = mapped_column(String(16), default="")
    association_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    received_at: Mapped[datetime] = mapped_column(DateTime)
    series: Mapped[Series] = relationship(back_populates="instances")


class Job(Base):
    """One model run over one study generation. `jobs/queue.py` owns every change of `state`."""

    __tablename__ = "jobs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    generation: Mapped[int] = mapped_column(Integer)
    model_name: Mapped[str] = mapped_column(String(64))
    state: Mapped[JobState] = mapped_column(_enum(JobState), default=JobState.QUEUED)
    priority: Mapped[int] = mapped_column(Integer, default=Priority.ROUTINE.value)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    run_after: Mapped[datetime] = mapped_column(DateTime)
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    # claims whose worker stopped (its lease ran out); server default: rows from before revision 0001
    lease_expiries: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    worker_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    last_error: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)

    __table_args__ = (
        UniqueConstraint("study_id", "generation", "model_name", name="uq_job_study_generation_model"),
        # one waiting job per study and model, whatever the generation (a running one may coexist)
        Index(
            "uq_job_queued_per_study_model",
            "study_id",
            "model_name",
            unique=True,
            sqlite_where=text("state = 'queued'"),
            postgresql_where=text("state = 'queued'"),
        ),
        Index("ix_job_claim", "state", "priority", "run_after"),
        one_of("jobs", "state", JobState),
    )


class Result(Base):
    """What a model said about a study generation (or why it could not say anything)."""

    __tablename__ = "results"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), unique=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    model_name: Mapped[str] = mapped_column(String(64))
    model_version: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))  # analysed | not_analysed | failed
    critical: Mapped[bool] = mapped_column(default=False)
    payload: Mapped[dict] = mapped_column(JSON)  # StudyAnalysis.to_json()
    created_at: Mapped[datetime] = mapped_column(DateTime)

    __table_args__ = (one_of("results", "status", AnalysisStatus),)


class Output(Base):
    """A DICOM object we wrote (SR or overlay SC), kept in the outbox until delivered everywhere."""

    __tablename__ = "outputs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    result_id: Mapped[int] = mapped_column(ForeignKey("results.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # sr | overlay | seg
    sop_class_uid: Mapped[str] = mapped_column(String(64))
    sop_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    series_uid: Mapped[str] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(Text)  # relative to storage.outbox
    created_at: Mapped[datetime] = mapped_column(DateTime)


class Retried:
    """Columns of a row sent with retries (deliveries, notifications); `runtime/retry.py` is the policy."""

    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime)
    last_error: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime)
    sent_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class Claimed:
    """Columns of a row a sending process claims before it sends (`db/claims.py`): who holds it, until when.
    Both NULL, or `lease_until` in the past: free for any process to claim."""

    claimed_by: Mapped[str | None] = mapped_column(String(128), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class Delivery(Retried, Claimed, Base):
    __tablename__ = "deliveries"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    output_id: Mapped[int] = mapped_column(ForeignKey("outputs.id"), index=True)
    destination: Mapped[str] = mapped_column(String(64))
    state: Mapped[DeliveryState] = mapped_column(_enum(DeliveryState), default=DeliveryState.PENDING)

    __table_args__ = (
        UniqueConstraint("output_id", "destination", name="uq_delivery_output_destination"),
        Index("ix_delivery_due", "state", "next_attempt_at"),
        one_of("deliveries", "state", DeliveryState),
    )


class Notification(Retried, Claimed, Base):
    """A critical-finding alert to one target (`webhook`, `hl7`), queued in the transaction that raised the
    study to STAT and sent by the serve process with retries (`notify/state.py` owns `state`)."""

    __tablename__ = "notifications"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    target: Mapped[str] = mapped_column(String(16))  # webhook | hl7
    state: Mapped[NotificationState] = mapped_column(
        _enum(NotificationState), default=NotificationState.PENDING
    )
    body: Mapped[str] = mapped_column(Text)  # the JSON document or the HL7 message, as sent
    control_id: Mapped[str] = mapped_column(String(20), default="")  # HL7 MSH-10, which the ACK must echo

    __table_args__ = (
        UniqueConstraint("study_id", "target", name="uq_notification_study_target"),
        Index("ix_notification_due", "state", "next_attempt_at"),
        one_of("notifications", "state", NotificationState),
    )


class User(Base):
    """A dashboard account (`web/accounts.py` owns it): a role and an Argon2 password hash, never the password."""

    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))  # admin | reader
    password_hash: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    disabled: Mapped[bool] = mapped_column(default=False)


class WebSession(Base):
    """A logged-in browser: the row is keyed by the sha256 of the cookie's token, with its CSRF token."""

    __tablename__ = "web_sessions"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256 hex of the cookie value
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime)
    expires_at: Mapped[datetime] = mapped_column(DateTime, index=True)


class LoginToken(Base):
    """A one-time login link (`dicom-node demo`, `user add --login-link`): sha256 of the token, used once."""

    __tablename__ = "login_tokens"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256 hex of the token
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime)
    used_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class AuditEvent(Base):
    """Who did what (`runtime/audit.py` writes every row): association accepts and rejects, logins, config
    changes with before/after, re-analyses and re-sends. No patient identifiers: AE titles, peers,
    user names, Study Instance UIDs and configuration values only."""

    __tablename__ = "audit_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime, index=True)
    kind: Mapped[str] = mapped_column(String(32), index=True)
    actor: Mapped[str] = mapped_column(String(64), default="")  # user name, or the calling AE title
    peer: Mapped[str] = mapped_column(String(64), default="")  # the client's or the DICOM peer's address
    subject: Mapped[str] = mapped_column(String(128), default="")  # what it was about
    detail: Mapped[str] = mapped_column(Text, default="")
    before: Mapped[str] = mapped_column(Text, default="")
    after: Mapped[str] = mapped_column(Text, default="")


class RadiologyReport(Base):
    """A radiologist's report from the RIS (HL7 ORU or `reports import`; `textreports/store.py` owns it).

    Matched to studies by Study Instance UID or accession number whenever either side arrives; the newest
    report for one accession (or Study Instance UID when there is no accession) is current, the others are
    superseded by it (a correction supersedes the original, a late-arriving older message is kept superseded)."""

    __tablename__ = "radiology_reports"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    source: Mapped[str] = mapped_column(String(16))  # hl7 | import
    source_key: Mapped[str] = mapped_column(String(255), unique=True)  # repeated message -> same key, one row
    match_key: Mapped[str] = mapped_column(String(80), index=True)  # acc:<accession> or uid:<study uid>
    accession_number: Mapped[str] = mapped_column(String(64), default="", index=True)
    study_uid: Mapped[str] = mapped_column(String(64), default="", index=True)
    patient_id: Mapped[str] = mapped_column(String(64), default="")
    status: Mapped[str] = mapped_column(String(8), default="F")  # HL7 result status: P, F, C, X ...
    reported_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    received_at: Mapped[datetime] = mapped_column(DateTime, index=True)
    text: Mapped[str] = mapped_column(Text)
    superseded_by: Mapped[int | None] = mapped_column(ForeignKey("radiology_reports.id"), nullable=True, index=True)
    superseded_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class ReportRejection(Base):
    """A report message or import row that was refused (NAKed), kept with the reason and its raw text."""

    __tablename__ = "report_rejections"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    received_at: Mapped[datetime] = mapped_column(DateTime, index=True)
    source: Mapped[str] = mapped_column(String(255))  # "hl7 <peer>" or "import <file>:<line>"
    control_id: Mapped[str] = mapped_column(String(64), default="")
    reason: Mapped[str] = mapped_column(Text)
    raw: Mapped[str] = mapped_column(Text)


class ReportLabel(Base):
    """What one version of the report labeller made of one report: a probability per label and the labels
    present at its thresholds."""

    __tablename__ = "report_labels"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    report_id: Mapped[int] = mapped_column(ForeignKey("radiology_reports.id"), index=True)
    model_name: Mapped[str] = mapped_column(String(64))
    model_version: Mapped[str] = mapped_column(String(64))
    manifest_sha256: Mapped[str] = mapped_column(String(64), default="")
    probabilities: Mapped[dict] = mapped_column(JSON)  # label -> probability
    positive: Mapped[list] = mapped_column(JSON)  # labels at or above their thresholds
    created_at: Mapped[datetime] = mapped_column(DateTime)

    __table_args__ = (UniqueConstraint("report_id", "model_name", "model_version", name="uq_report_label_model"),)


class MonitorAlert(Retried, Claimed, Base):
    """AI-vs-report agreement below its floor for one model version, label and rate (`textreports/monitor.py`
    owns it). Open until the rate is back at or above the floor (`cleared_at`); `state` is the webhook's
    delivery (pending -> sent | failed, skipped when no webhook is configured)."""

    __tablename__ = "monitor_alerts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_name: Mapped[str] = mapped_column(String(64))
    model_version: Mapped[str] = mapped_column(String(64))
    label: Mapped[str] = mapped_column(String(64))
    metric: Mapped[str] = mapped_column(String(16))  # sensitivity | specificity
    value: Mapped[float] = mapped_column(Float)
    floor: Mapped[float] = mapped_column(Float)
    cases: Mapped[int] = mapped_column(Integer)  # the denominator of the rate
    window_days: Mapped[float] = mapped_column(Float)
    state: Mapped[NotificationState] = mapped_column(_enum(NotificationState), default=NotificationState.PENDING)
    body: Mapped[str] = mapped_column(Text)  # the webhook's JSON document
    cleared_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)

    __table_args__ = (
        # one open alert per model version, label and rate
        Index("uq_monitor_alert_open", "model_name", "model_version", "label", "metric", unique=True,
              sqlite_where=text("cleared_at IS NULL"), postgresql_where=text("cleared_at IS NULL")),
        one_of("monitor_alerts", "state", NotificationState),
    )
