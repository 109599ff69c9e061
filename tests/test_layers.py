"""The layers hold: the engine and the store load neither the HTTP models nor the web framework."""

import subprocess
import sys


def test_the_engine_and_the_store_import_no_http_layer() -> None:
    code = ("import sys, app.engine.engine, app.engine.follower, app.store.sqlite, app.store.postgres; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('fastapi', 'starlette') "
            "or m in ('app.schemas', 'app.api')))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"
