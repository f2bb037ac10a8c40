import re
from pathlib import Path

from lora_assets.settings import settings_reference_markdown

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")


def test_readme_starts_with_the_two_setup_commands():
    commands = re.search(r"```bash\n(.*?)```", README, re.S).group(1).strip().splitlines()
    assert [line.split("#")[0].strip() for line in commands] == ["make demo", "make test"]


def test_settings_reference_matches_the_models():
    block = README.split("<!-- settings-reference:start -->")[1].split("<!-- settings-reference:end -->")[0]
    assert block.strip() == settings_reference_markdown()
