"""/api/settings: the settings in effect, each with where its value came from, secrets masked (app.settings_report)."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field, JsonValue

from app.api.deps import OPS_RESPONSES, RuntimeDep, require_ops
from app.settings import config_path
from app.settings_report import Source, read_file_values, report

router = APIRouter(prefix="/api", tags=["operations"], dependencies=[Depends(require_ops)], responses=OPS_RESPONSES)


class SettingItem(BaseModel):
    section: str = Field(description='the [section] of the file ("users.fields"); "" for a top-level setting')
    key: str
    value: JsonValue = Field(description='as in effect; a secret is "********" when set and null when unset')
    source: Source = Field(
        description="default, file (the TOML file), environment (SYNC_<SECTION>__<KEY>), secrets_dir (a file of "
        "SYNC_SECRETS_DIR) or startup (set when the service started and by none of those now: dev mode's "
        "generated secrets, or a file changed since; a restart applies it)"
    )
    secret: bool
    description: str | None = None


class SettingsAnswer(BaseModel):
    file: str | None = Field(description="the configuration file read (SYNC_CONFIG, else ./sync.toml); null if none")
    items: list[SettingItem]


@router.get(
    "/settings",
    summary="Every setting in effect with its source (default, file, environment), secrets masked",
    response_model=SettingsAnswer,
)
def effective_settings(rt: RuntimeDep) -> SettingsAnswer:
    # A plain def: it reads the file and the secrets directory, off the event loop.
    path = config_path()
    rows = report(rt.settings, file_values=read_file_values(path))
    return SettingsAnswer(
        file=str(path.absolute()) if path.is_file() else None,
        items=[
            SettingItem(
                section=r.section,
                key=r.key,
                value=r.value,
                source=r.source,
                secret=r.secret,
                description=r.description,
            )
            for r in rows
        ],
    )
