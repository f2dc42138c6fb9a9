"""Settings from the environment (prefix ``PONYSERVE_``) and the TOML models file.

Everything a deployment changes lives here; code elsewhere takes a ``Settings``
or a ``ModelSpec`` and never reads the environment itself.
"""

from __future__ import annotations

import ipaddress
import json
import tomllib
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

Family = Literal["sdxl", "sd3", "auraflow"]
DType = Literal["auto", "float32", "bfloat16", "float16"]
CompileMode = Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]

DEMO_MODEL_NAME = "demo"


class ModelDefaults(BaseModel):
    """What a request gets for each parameter it leaves out."""

    model_config = ConfigDict(extra="forbid")

    steps: int = Field(default=20, ge=1)
    guidance_scale: float = Field(default=5.0, ge=0.0)
    sampler: str = "Euler a"
    width: int = Field(default=1024, ge=64)
    height: int = Field(default=1024, ge=64)


class ModelSpec(BaseModel):
    """One servable model as the models file describes it."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    family: Family = "sdxl"
    # A diffusers folder (model_index.json inside) or one .safetensors checkpoint.
    path: Path
    license: str | None = None
    description: str = ""
    defaults: ModelDefaults = Field(default_factory=ModelDefaults)
    prompt_prefix: str = ""
    prompt_suffix: str = ""
    default_negative_prompt: str = ""
    max_steps: int = Field(default=60, ge=1, le=500)
    max_width: int = Field(default=2048, ge=64)
    max_height: int = Field(default=2048, ge=64)
    min_width: int = Field(default=256, ge=64)
    min_height: int = Field(default=256, ge=64)
    dtype: DType = "auto"
    # For single-file checkpoints: a local diffusers config folder (model_index.json, component
    # configs, tokenizers). SDXL files may leave it out: the bundled SDXL base configs are used (right
    # for Pony V6 XL). SD3 files need it; AuraFlow files (the transformer alone) take every other
    # component's weights from it too.
    config: Path | None = None
    nsfw_capable: bool = False
    # A Pony-family model trained on rating_safe/questionable/explicit tags: each job gets the
    # tags of its account's max_rating (see app.moderation.apply_rating_tags). Opt-in, because
    # on a model that never saw these tags they are just noise in the prompt.
    rating_tags: bool = False
    # A VAE to use instead of the model's own: a diffusers folder (config.json, or a vae/
    # subfolder) or one .safetensors file in diffusers or original layout.
    vae: Path | None = None
    # "auto" keeps the VAE in the model's dtype. "float32" decodes in full precision (what
    # the SDXL VAE needs under float16); nothing is upcast unless this says so.
    vae_dtype: DType = "auto"
    # A1111 numbering (1 = last CLIP layer, 2 = penultimate); used when a request names none.
    clip_skip: int | None = Field(default=None, ge=1, le=32)
    # When set, only these sizes ("832x1216") or aspect ratios ("13:19") are accepted.
    allowed_sizes: list[str] | None = None
    allowed_aspect_ratios: list[str] | None = None
    # torch.compile the UNet/transformer at load (CUDA). Calls are padded up to the next of
    # compile_batch_sizes, each warmed at start-up, so requests never trigger a recompile.
    compile: bool = False
    compile_batch_sizes: list[int] = Field(default_factory=lambda: [1, 2, 4, 8], min_length=1)
    compile_mode: CompileMode = "default"
    # Load (and, with compile, compile and warm) when a worker starts rather than on the model's
    # first job. Unset: preloaded exactly when compiled, so no request ever waits for a compile.
    preload: bool | None = None

    @property
    def loads_at_start(self) -> bool:
        return self.preload if self.preload is not None else self.compile

    @model_validator(mode="after")
    def _family_defaults(self) -> ModelSpec:
        from app.runtime.families import family_traits

        # Flow-matching families have no "Euler a"; a spec that does not choose gets the family's default.
        if "sampler" not in self.defaults.model_fields_set:
            # A copy: the defaults object may be shared with specs of other families.
            self.defaults = self.defaults.model_copy(update={"sampler": family_traits(self.family).default_sampler})
        return self

    @model_validator(mode="after")
    def _defaults_within_limits(self) -> ModelSpec:
        from app.runtime.families import family_traits

        multiple = family_traits(self.family).size_multiple
        d = self.defaults
        if d.steps > self.max_steps:
            raise ValueError(f"defaults.steps {d.steps} exceeds max_steps {self.max_steps}")
        for label, value, lo, hi in (
            ("width", d.width, self.min_width, self.max_width),
            ("height", d.height, self.min_height, self.max_height),
        ):
            if value % multiple or not lo <= value <= hi:
                raise ValueError(f"defaults.{label} {value} must be a multiple of {multiple} within [{lo}, {hi}]")
        return self

    @model_validator(mode="after")
    def _size_rules(self) -> ModelSpec:
        from app.runtime.sizes import check_size, parse_aspect_ratio, parse_size

        for text in self.allowed_sizes or ():
            width, height = parse_size(text)
            problem = check_size(self, width, height, restrict=False)
            if problem is not None:
                raise ValueError(f"allowed_sizes entry {text!r}: {problem}")
        for text in self.allowed_aspect_ratios or ():
            parse_aspect_ratio(text)
        if any(size < 1 for size in self.compile_batch_sizes):
            raise ValueError("compile_batch_sizes must be positive")
        self.compile_batch_sizes = sorted(set(self.compile_batch_sizes))
        problem = check_size(self, self.defaults.width, self.defaults.height)
        if problem is not None:
            raise ValueError(f"defaults: {problem}")
        return self

    def revise_prompt(self, prompt: str) -> str:
        """The prompt the pipeline actually receives: the model's templates around the caller's text."""
        parts = [p.strip().strip(",").strip() for p in (self.prompt_prefix, prompt, self.prompt_suffix)]
        return ", ".join(p for p in parts if p)

    def revise_negative_prompt(self, negative_prompt: str | None) -> str:
        if negative_prompt is None:
            return self.default_negative_prompt
        return negative_prompt


class LicenseSpec(BaseModel):
    """A model licence's terms as the models file (or the admin API) states them."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    name: str = Field(min_length=1, max_length=200)
    url: str | None = Field(default=None, max_length=500)
    monetization_allowed: bool = True
    allowed_plans: list[str] | None = Field(default=None, description="Plan codes; null = every plan")
    monthly_image_cap: int | None = Field(default=None, ge=0, description="Deployment-wide; null = no cap")
    cap_period: Literal["calendar_month", "rolling_30d"] = "calendar_month"
    annual_revenue_cap_usd: float | None = Field(default=None, ge=0)
    warning_thresholds: list[float] = Field(default=[0.8, 0.95], min_length=1, max_length=5)
    at_cap: Literal["reject", "fallback", "allow_overage"] = "reject"
    fallback_model: str | None = None

    @model_validator(mode="after")
    def _fallback_named(self) -> LicenseSpec:
        if self.at_cap == "fallback" and not self.fallback_model:
            raise ValueError("at_cap = 'fallback' needs fallback_model")
        if any(not 0 < t <= 1 for t in self.warning_thresholds):
            raise ValueError("warning thresholds are fractions in (0, 1]")
        self.warning_thresholds = sorted(self.warning_thresholds)
        return self


class LoraSpec(BaseModel):
    """One LoRA a request may apply, as the models file's ``[[loras]]`` describes it."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    # A .safetensors file in the kohya/A1111 layout Civitai distributes, or in diffusers' layout.
    path: Path
    # The base model family it was trained for: it applies to models of that family only.
    family: Family = "sdxl"
    default_weight: float = Field(default=1.0, ge=-4.0, le=4.0)
    trigger_words: list[str] = Field(default_factory=list, max_length=32)
    # A licence id of this file's [[licenses]], enforced like a model's (plans, monetisation).
    license: str | None = None
    description: str = ""


class ModelsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    models: list[ModelSpec] = Field(min_length=1)
    licenses: list[LicenseSpec] = Field(default_factory=list)
    loras: list[LoraSpec] = Field(default_factory=list)

    @field_validator("loras")
    @classmethod
    def _unique_lora_names(cls, loras: list[LoraSpec]) -> list[LoraSpec]:
        names = [lora.name for lora in loras]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate LoRA names: {', '.join(dupes)}")
        return loras

    @field_validator("models")
    @classmethod
    def _unique_names(cls, models: list[ModelSpec]) -> list[ModelSpec]:
        names = [m.name for m in models]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate model names: {', '.join(dupes)}")
        return models


def read_models_file(path: Path) -> ModelsFile:
    with path.open("rb") as fh:
        return ModelsFile.model_validate(tomllib.load(fh))


def load_models_file(path: Path) -> list[ModelSpec]:
    """Parse a models file; relative paths (model, VAE, config folder) resolve against the file's folder."""
    models = read_models_file(path).models
    for spec in models:
        spec.path = (path.parent / spec.path).resolve()
        if spec.vae is not None:
            spec.vae = (path.parent / spec.vae).resolve()
        if spec.config is not None:
            spec.config = (path.parent / spec.config).resolve()
    return models


def load_lora_specs(path: Path) -> list[LoraSpec]:
    """The models file's LoRAs; relative paths resolve against the file's folder."""
    loras = read_models_file(path).loras
    for lora in loras:
        lora.path = (path.parent / lora.path).resolve()
    return loras


DEMO_LORA_NAME = "demo-style"
DEMO_LORA_TRIGGER = "demostyle"


def demo_lora_path(demo_model_path: Path) -> Path:
    """Where ``ponyserve demo-model`` writes the demo LoRA: beside the model's components, which diffusers
    ignores (it reads only the folders model_index.json names)."""
    return demo_model_path / "ponyserve-loras" / f"{DEMO_LORA_NAME}.safetensors"


def demo_lora_spec(demo_model_path: Path) -> LoraSpec:
    return LoraSpec(name=DEMO_LORA_NAME, path=demo_lora_path(demo_model_path), family="sdxl", default_weight=1.0,
                    trigger_words=[DEMO_LORA_TRIGGER], license="demo",
                    description="Tiny random LoRA for the demo model (kohya layout), to try LoRAs with.")


def demo_model_spec(path: Path) -> ModelSpec:
    """The built-in tiny random model served when no models file is configured."""
    return ModelSpec(
        name=DEMO_MODEL_NAME,
        family="sdxl",
        path=path,
        license="demo",
        description="Tiny randomly initialised SDXL-architecture pipeline (noise-like images, for trying the API).",
        defaults=ModelDefaults(steps=20, guidance_scale=5.0, sampler="Euler a", width=512, height=512),
        prompt_prefix="score_9, score_8_up, score_7_up",
        max_steps=60,
        max_width=1024,
        max_height=1024,
        min_width=64,
        min_height=64,
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PONYSERVE_", extra="ignore")

    # sqlite+aiosqlite for the embedded default, postgresql+psycopg in production.
    database_url: str = "sqlite+aiosqlite:///./var/ponyserve.db"
    data_dir: Path = Path("./var")
    images_dir: Path | None = None
    models_file: Path | None = None
    demo_model_path: Path | None = None
    device: str = "cpu"
    host: str = "127.0.0.1"
    port: int = 8000
    # Longest a synchronous request (or Prefer: wait) holds its connection open.
    max_wait_seconds: float = 300.0
    # A worker that has not renewed its lease for this long is presumed dead.
    job_lease_seconds: float = 120.0
    heartbeat_seconds: float = 2.0
    # /readyz fails when no worker heartbeat is younger than this.
    worker_stale_seconds: float = 15.0
    max_body_bytes: int = 64 * 1024
    # Longest prompt, and separately negative prompt, a caller may send (400 prompt_too_long).
    max_prompt_chars: int = Field(default=4000, ge=1)
    # Upper bound on queued jobs overall: beyond it the API answers 503, not a growing backlog.
    max_queue_depth: int = 10_000
    # Open event streams (GET /v1/generations/{id}/events) one API process serves, per key and in
    # all; beyond either the stream is refused 429 too_many_streams.
    max_streams_per_key: int = Field(default=10, ge=1)
    max_streams_per_process: int = Field(default=256, ge=1)
    log_json: bool = True
    # Weights a worker keeps resident per device; least recently used models are evicted beyond it.
    model_memory_budget_bytes: int | None = None
    # Images one pipeline call may carry (jobs sharing a batch key are combined up to this).
    max_batch_images: int = 4
    # How long a worker holds a batch that has room, waiting for more jobs with its batch key (0 = run
    # at once). On a GPU a few tens of ms turn a trickle of requests into batches; on a CPU a batch of k
    # takes k times as long, so waiting only adds latency.
    batch_window_ms: float = Field(default=0.0, ge=0, le=10_000)
    # Within one priority a worker takes jobs for the models it has loaded before older jobs for models
    # it would have to load, until those have waited this long (another worker may have them loaded).
    model_affinity_seconds: float = Field(default=2.0, ge=0)
    # How long shutdown waits for a running batch to finish.
    drain_timeout_seconds: float = 60.0
    # Moderation. CSAM-category blocks within the window that suspend the account.
    moderation_strike_threshold: int = Field(default=3, ge=1)
    moderation_strike_window_hours: float = Field(default=24.0, gt=0)
    # The operator's own word lists (word-list format, comma-separated paths): more blocked
    # terms, and benign phrases that lift a built-in blocklist match.
    moderation_block_files: Annotated[list[Path], NoDecode] = Field(default_factory=list)
    moderation_allow_files: Annotated[list[Path], NoDecode] = Field(default_factory=list)
    # How often each API process checks the artist opt-out registry for changes.
    moderation_optout_refresh_seconds: float = Field(default=2.0, gt=0)
    # Output review: a TorchScript (.pt/.ts) or torch.export (.pt2) image classifier that maps
    # a float batch [N, 3, S, S] in [0, 1] to N scores in [0, 1]; unset = no output review.
    moderation_classifier: Path | None = None
    moderation_classifier_input_size: int = Field(default=224, ge=8, le=2048)
    # Stripe billing (docs/billing.md). Without a secret key nothing is sent to Stripe: billable
    # usage still queues in the outbox and GET /admin/billing shows the backlog.
    stripe_secret_key: SecretStr | None = None
    # Webhook endpoint signing secrets (whsec_…), comma-separated: while a secret is rotated the
    # old and the new one both verify.
    stripe_webhook_secrets: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    # A signature older (or further in the future) than this is refused as a replay.
    stripe_webhook_tolerance_seconds: int = Field(default=300, ge=1)
    # Where the Stripe API lives; only tests and local mocks change it.
    stripe_api_base: str | None = None
    stripe_timeout_seconds: float = Field(default=10.0, gt=0)
    # The Billing Meter's event_name; its id (for reconciliation) is looked up by name when unset.
    stripe_meter_event_name: str = Field(default="ponyserve_images", min_length=1, max_length=100)
    stripe_meter_id: str | None = None
    # Meter event identifiers are "<prefix>-<installation id>-<ledger row id>": unique across
    # deployments that share one Stripe account.
    stripe_identifier_prefix: str = Field(default="ponyserve", pattern=r"^[A-Za-z0-9_]{1,40}$")
    # After a failed invoice payment, how long the account's keys keep working.
    billing_grace_period_seconds: float = Field(default=3 * 86400, ge=0)
    # The plan an account falls back to when its subscription ends or pauses.
    billing_fallback_plan: str = "free"
    # Paid invoices in this currency are recorded as revenue (licence revenue caps are in USD).
    billing_revenue_currency: str = "usd"
    billing_reporter_batch_size: int = Field(default=100, ge=1, le=1000)
    billing_reporter_concurrency: int = Field(default=8, ge=1, le=64)
    billing_reporter_lease_seconds: float = Field(default=120.0, gt=0)
    billing_reporter_idle_seconds: float = Field(default=1.0, gt=0)
    # How often a reporter sets aside unsendable events and retries webhook events that failed.
    billing_reporter_sweep_seconds: float = Field(default=5.0, gt=0)
    # Exponential backoff with jitter between attempts at one event, and after Stripe-wide failures.
    billing_retry_base_seconds: float = Field(default=1.0, gt=0)
    billing_retry_max_seconds: float = Field(default=300.0, gt=0)
    # Stripe de-duplicates meter event identifiers for about 24 hours; an event whose earlier
    # attempt may have reached Stripe is re-sent only within this window (kept below 24 h).
    billing_dedup_window_seconds: float = Field(default=23 * 3600, gt=0, le=24 * 3600)
    # Stripe refuses meter events older than 35 days; older ones are set aside as expired.
    billing_event_max_age_seconds: float = Field(default=35 * 86400 - 3600, gt=0, le=35 * 86400)
    # How often each API process re-reads the outbox gauges it exports on /metrics.
    billing_metrics_refresh_seconds: float = Field(default=10.0, gt=0)
    # The base of every link the service hands out (image URLs, review previews), e.g.
    # "https://images.example.com". Unset: the scheme and the address of the socket the request
    # arrived on, never the caller's Host header (which anyone can set, so links would point
    # wherever a caller says). Behind a proxy, set this or list the proxy in trusted_proxies.
    public_url: str | None = None
    # Proxies (IPs or CIDRs, comma-separated) whose X-Forwarded-Proto/-Host and Forwarded headers
    # decide link bases when public_url is unset. Empty: forwarded headers are ignored.
    trusted_proxies: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # When set, GET /metrics wants "Authorization: Bearer <token>". Unset, /metrics stays open for
    # laptop use; a production deployment must set it (the numbers describe customers' traffic).
    metrics_token: SecretStr | None = None
    # How often a background task re-reads the database-backed gauges (fleet, licences, billing),
    # so a scrape itself does no database work.
    metrics_refresh_seconds: float = Field(default=15.0, gt=0)
    # Object storage for images: "s3://bucket/prefix" keeps every image in the bucket, so API replicas
    # and GPU workers share nothing but Postgres and the bucket. Unset: the local images_dir.
    storage_url: str | None = Field(default=None, pattern=r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$")
    # An S3-compatible server (MinIO, SeaweedFS, Ceph, …); unset = AWS. Credentials and region come
    # from the standard AWS environment variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION).
    s3_endpoint_url: str | None = None
    # With object storage: image links answer 307 to an expiring presigned bucket URL instead of the
    # API streaming the bytes (the bucket must be reachable by the callers).
    storage_redirect: bool = False
    # Partner webhooks (docs/partners.md). Targets resolving to loopback, private, link-local or
    # metadata addresses are refused unless this is set (laptops, tests, in-cluster receivers).
    webhook_allow_private: bool = False
    # Seconds between attempts at one delivery after the first (Standard Webhooks' schedule), with jitter.
    webhook_retry_schedule: Annotated[list[float], NoDecode] = Field(
        default_factory=lambda: [5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 50400.0, 72000.0, 86400.0])
    webhook_timeout_seconds: float = Field(default=10.0, gt=0, le=60)
    # How often each process's dispatcher looks at the webhook outbox when nothing is in flight (the
    # longest a new message waits before its first attempt).
    webhook_poll_seconds: float = Field(default=0.5, gt=0)
    # Deliveries in flight per dispatcher (one at a time per endpoint, whatever this says).
    webhook_concurrency: int = Field(default=16, ge=1, le=256)
    # How long a rotated-out signing secret keeps signing beside the new one.
    webhook_secret_overlap_seconds: float = Field(default=24 * 3600, ge=0)
    # How often a worker purges jobs past their account's retention.
    retention_purge_interval_seconds: float = Field(default=60.0, gt=0)
    # C2PA: with both set, every image is also signed with a C2PA manifest (PEM certificate chain,
    # leaf first, and its private key; the algorithm follows the key: es256/es384/es512/ps256/ed25519).
    c2pa_cert_file: Path | None = None
    c2pa_key_file: Path | None = None
    # An RFC 3161 time-stamp authority for C2PA signatures; unset = none.
    c2pa_tsa_url: str | None = None
    # `ponyserve worker` serves its own /metrics (GPU gauges, job counters), /healthz and /readyz on this
    # port, so Prometheus can scrape every worker pod; unset = no server. Under `--devices` each child
    # takes the first free port from here on. /metrics wants metrics_token like the API's.
    worker_metrics_port: int | None = Field(default=None, ge=0, le=65535)
    # All interfaces: in a pod the scraper and the kubelet reach it on the pod's address.
    worker_metrics_host: str = "0.0.0.0"
    # img2img inputs given as URLs (init_image / mask = "https://…"): off unless the operator allows them,
    # and then fetched like a webhook is sent: public addresses only (checked after DNS), no redirects.
    image_url_inputs: bool = False
    # Also http:// and private or loopback addresses: for development and tests, never on a shared host.
    image_url_allow_private: bool = False
    image_url_timeout_seconds: float = Field(default=10.0, gt=0, le=120)

    @field_validator("moderation_block_files", "moderation_allow_files", "stripe_webhook_secrets", "trusted_proxies",
                     "webhook_retry_schedule", mode="before")
    @classmethod
    def _path_list(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        # Fail at start-up on a typo rather than silently trusting nobody (or everybody).
        for entry in value:
            ipaddress.ip_network(entry, strict=False)
        return value

    @field_validator("webhook_retry_schedule")
    @classmethod
    def _schedule(cls, value: list[float]) -> list[float]:
        if any(delay < 0 for delay in value):
            raise ValueError("webhook_retry_schedule delays must not be negative")
        return value

    @model_validator(mode="after")
    def _c2pa_pair(self) -> Settings:
        if (self.c2pa_cert_file is None) != (self.c2pa_key_file is None):
            raise ValueError("c2pa_cert_file and c2pa_key_file are set together or not at all")
        return self

    @field_validator("public_url")
    @classmethod
    def _absolute_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("public_url must start with http:// or https://")
        return value.rstrip("/") if value else None

    @property
    def links_base(self) -> str:
        """The base of links made outside any request (webhook bodies): public_url, else the bind address."""
        if self.public_url:
            return self.public_url
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def resolved_images_dir(self) -> Path:
        return self.images_dir or self.data_dir / "images"

    @property
    def resolved_demo_model_path(self) -> Path:
        return self.demo_model_path or self.data_dir / "models" / "demo"

    @property
    def stripe_enabled(self) -> bool:
        return self.stripe_secret_key is not None and bool(self.stripe_secret_key.get_secret_value())

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def license_specs(self) -> list[LicenseSpec]:
        if self.models_file is not None:
            return read_models_file(self.models_file).licenses
        return [LicenseSpec(id="demo", name="Demo model (no restrictions)")]

    def model_specs(self) -> list[ModelSpec]:
        if self.models_file is not None:
            return load_models_file(self.models_file)
        return [demo_model_spec(self.resolved_demo_model_path)]

    def lora_specs(self) -> list[LoraSpec]:
        """The LoRAs requests may name: the models file's, else the demo LoRA (``demo-style``)."""
        if self.models_file is not None:
            return load_lora_specs(self.models_file)
        return [demo_lora_spec(self.resolved_demo_model_path)]


@lru_cache
def get_settings() -> Settings:
    return Settings()
