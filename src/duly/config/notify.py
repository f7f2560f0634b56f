"""Settings of notifications: channels (e-mail, webhook, SMS and push gateways), routing, reminders, delivery."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    FilePath,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from duly.config.fields import (
    HhMm,
    NonEmptyStr,
    NotifyChannel,
    ReminderOffset,
    check_schedule_name,
    none_is_empty,
)


def _quiet_default() -> list[NotifyChannel]:
    return ["sms", "push"]


class EmailSettings(BaseModel):
    """The SMTP server for e-mail (customers and operations)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    host: NonEmptyStr | None = None
    """SMTP host; ``None`` disables e-mail."""
    port: Annotated[int, Field(ge=1, le=65535)] = 587
    starttls: bool = True
    ssl: bool = False
    """Implicit TLS (port 465); excludes ``starttls``."""
    username: NonEmptyStr | None = None
    password: SecretStr | None = None
    sender: NonEmptyStr = "duly <noreply@localhost>"
    timeout_seconds: Annotated[float, Field(gt=0)] = 30.0
    ca_file: FilePath | None = None
    """PEM bundle of the CAs trusted for the server's certificate (an internal CA); default:
    the system's. The certificate and its name are always checked."""

    @model_validator(mode="after")
    def _one_tls_mode(self) -> EmailSettings:
        if self.ssl and self.starttls:
            raise PydanticCustomError(
                "smtp_tls",
                "ssl and starttls exclude each other: set one of them to false",
                {"at": ("ssl",), "value": True},
            )
        return self


class WebhookSettings(BaseModel):
    """A named webhook (JSON POST; ``slack`` sends ``{"text": ...}``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    name: Annotated[str, AfterValidator(check_schedule_name)]
    url: Annotated[str, Field(pattern=r"^https?://[^\s/]+")]
    format: Literal["json", "slack"] = "json"
    timeout_seconds: Annotated[float, Field(gt=0)] = 10.0


class GatewaySettings(BaseModel):
    """An HTTP gateway (SMS or push): JSON POST with a bearer token."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    url: Annotated[str, Field(pattern=r"^https?://[^\s/]+")] | None = None
    """``None`` disables the channel."""
    auth_token: SecretStr | None = None
    sender: NonEmptyStr = "duly"
    timeout_seconds: Annotated[float, Field(gt=0)] = 10.0


class AlertRoute(BaseModel):
    """Where alerts of one severity go: a channel and its recipients.

    ``to`` holds e-mail addresses, webhook names, phone numbers or push tokens.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    channel: NotifyChannel
    to: list[NonEmptyStr] = Field(default_factory=list)

    @model_validator(mode="after")
    def _recipients(self) -> AlertRoute:
        if self.channel != "log" and not self.to:
            raise PydanticCustomError(
                "route_recipients", "a route needs at least one recipient in `to`"
            )
        return self


class RoutingSettings(BaseModel):
    """Alert routing by severity."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    critical: list[AlertRoute] = Field(default_factory=lambda: [AlertRoute(channel="log")])
    high: list[AlertRoute] = Field(default_factory=lambda: [AlertRoute(channel="log")])
    medium: list[AlertRoute] = Field(default_factory=lambda: [AlertRoute(channel="log")])
    low: list[AlertRoute] = Field(default_factory=lambda: [AlertRoute(channel="log")])
    repeat_minutes: Annotated[float, Field(gt=0)] = 60.0
    """An alert still open and raised again is re-sent at most this often (its dedupe window)."""


class ReminderSettings(BaseModel):
    """Payment reminders."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    enabled: bool = True
    offsets: Annotated[list[ReminderOffset], Field(min_length=0, max_length=10)] = Field(
        default_factory=lambda: ["3d", "1d", "1h"]
    )
    """Before the adjusted execution time: ``h``/``m`` are elapsed time, ``d``/``w`` calendar days."""
    quiet_start: HhMm = "21:00"
    quiet_end: HhMm = "08:00"
    quiet_channels: list[NotifyChannel] = Field(default_factory=_quiet_default)
    horizon_hours: Annotated[float, Field(gt=0)] = 24.0
    """Reminders are planned this long before the earliest offset is due."""


class DeliverySettings(BaseModel):
    """How deliveries are sent and retried."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    max_attempts: Annotated[int, Field(ge=1, le=100)] = 6
    backoff_seconds: Annotated[list[Annotated[float, Field(ge=0)]], Field(min_length=1)] = Field(
        default_factory=lambda: [10.0, 60.0, 300.0, 900.0, 3600.0]
    )
    """Waits before retries 1, 2, …; the last repeats."""
    lease_seconds: Annotated[float, Field(gt=0)] = 60.0
    """A delivery being sent is retried after this long if its sender vanished."""
    batch: Annotated[int, Field(ge=1, le=5000)] = 200
    concurrency: Annotated[int, Field(ge=1, le=256)] = 16
    poll_seconds: Annotated[float, Field(gt=0)] = 1.0


class NotifySettings(BaseModel):
    """Customer notifications, payment reminders and operations alerts."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    enabled: bool = True
    default_locale: NonEmptyStr = "en"
    email: EmailSettings = Field(default_factory=EmailSettings)
    webhooks: list[WebhookSettings] = Field(default_factory=list)
    sms: GatewaySettings = Field(default_factory=GatewaySettings)
    push: GatewaySettings = Field(default_factory=GatewaySettings)
    routing: RoutingSettings = Field(default_factory=RoutingSettings)
    reminders: ReminderSettings = Field(default_factory=ReminderSettings)
    delivery: DeliverySettings = Field(default_factory=DeliverySettings)

    _empty_sections = field_validator(
        "email", "sms", "push", "routing", "reminders", "delivery", mode="before"
    )(none_is_empty)

    @model_validator(mode="after")
    def _routes_reach_configured_channels(self) -> NotifySettings:
        names = {w.name for w in self.webhooks}
        for severity in ("critical", "high", "medium", "low"):
            for index, route in enumerate(getattr(self.routing, severity)):
                at = ("routing", severity, index)
                missing = None
                if route.channel == "webhook":
                    unknown = [n for n in route.to if n not in names]
                    if unknown:
                        missing = f"webhook {unknown[0]!r} is not among notify.webhooks"
                elif route.channel == "email" and self.email.host is None:
                    missing = "channel email has no notify.email.host"
                elif route.channel in ("sms", "push") and getattr(self, route.channel).url is None:
                    missing = f"channel {route.channel} has no notify.{route.channel}.url"
                if missing:
                    raise PydanticCustomError(
                        "route_channel",
                        "{problem}",
                        {"problem": missing, "at": at, "value": route.channel},
                    )
        return self
