"""The core and ``convstore.integrations`` import no framework: they stay optional extras."""

from __future__ import annotations

import json

import pytest

from tests.conftest import run_python

FRAMEWORKS = ("langgraph", "langchain_core", "langchain", "agents", "openai")


class TestImports:
    def test_importing_convstore_and_its_integrations_package_loads_no_framework(self) -> None:
        code = (
            "import json, sys\n"
            "import convstore, convstore.integrations\n"
            "from convstore import Store\n"
            "print(json.dumps(sorted(sys.modules)))\n"
        )
        done = run_python(code)
        assert done.returncode == 0, done.stderr
        loaded = json.loads(done.stdout)
        leaked = [m for m in loaded if m.split(".")[0] in FRAMEWORKS]
        assert leaked == []
        assert "convstore.integrations" in loaded  # the check looked at the right process

    def test_each_adapter_loads_only_its_own_framework(self) -> None:
        code = (
            "import json, sys\n"
            "import convstore.integrations.langchain\n"
            "print(json.dumps(sorted(sys.modules)))\n"
        )
        done = run_python(code)
        if done.returncode != 0 and "No module named 'langchain_core'" in done.stderr:
            pytest.skip("needs the langchain extra: pip install 'convstore[langchain]'")
        assert done.returncode == 0, done.stderr
        tops = {m.split(".")[0] for m in json.loads(done.stdout)}
        assert "langchain_core" in tops
        assert not tops & {"langgraph", "agents"}
