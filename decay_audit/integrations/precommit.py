"""The ``decay-audit-check`` pre-commit hook: audit changed rule and policy files against a model.

pre-commit passes the changed files that match the hook's ``files:``; which model they are
for, and the tool's rule language, come from the hook's ``args``::

    - id: decay-audit-check
      files: ^training/(decay_rules\\.json|decay_policy\\.yaml)$
      args: [--model, models/bert.keras, --target, keras, --rules, training/decay_rules.json]

A changed file that holds only ``preset``/``overrides`` is a policy file: the rule file named
by ``--rules`` is checked under it. Any other changed file is a rule file, checked under the
changed policy (if one changed in the same commit) or ``--preset``/``--policy``. Each check is
``decay-audit check`` exactly as on the command line; the exit code is the worst of them.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import click

from decay_audit.kinds import KerasBackend, Preset
from decay_audit.rules import TargetName

POLICY_KEYS = frozenset({"preset", "overrides"})


def is_policy_file(path: str | Path) -> bool:
    from decay_audit.errors import DecayAuditError
    from decay_audit.files import read_structured

    try:
        document = read_structured(Path(path))
    except DecayAuditError:
        return False
    return isinstance(document, dict) and bool(document) and set(document) <= POLICY_KEYS


def check_commands(
    models: Sequence[str],
    target: str,
    files: Sequence[str],
    rules: str | None = None,
    policy: str | None = None,
    preset: str | None = None,
    keras_backend: str | None = None,
) -> list[list[str]]:
    """The ``decay-audit check`` argument lists this hook runs (one per model, rule file and policy)."""
    policies = [f for f in files if is_policy_file(f)]
    rule_files = [f for f in files if f not in policies] or ([rules] if rules and policies else [])
    policy_files: list[str | None] = list(policies) or ([policy] if policy else [None])
    commands = []
    for model in models:
        for rule_file in rule_files:
            for policy_file in policy_files:
                command = ["check", model, "--target", target, "--rules", rule_file]
                if policy_file:
                    command += ["--policy", policy_file]
                elif preset:
                    command += ["--preset", preset]
                if keras_backend:
                    command += ["--keras-backend", keras_backend]
                commands.append(command)
    return commands


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--model", "models", multiple=True, required=True, help="The model the rules are for (repeatable).")
@click.option("--target", required=True, type=click.Choice([t.value for t in TargetName]), help="The rule language.")
@click.option("--rules", help="The rule file to check when only a policy file changed.")
@click.option("--policy", help="The policy to check under when no policy file changed.")
@click.option("--preset", type=click.Choice([p.value for p in Preset]), help="The preset when no policy is given.")
@click.option(
    "--keras-backend",
    type=click.Choice([b.value for b in KerasBackend]),
    help="For --target keras: the backend that trains.",
)
@click.argument("files", nargs=-1)
def main(
    models: tuple[str, ...],
    target: str,
    rules: str | None,
    policy: str | None,
    preset: str | None,
    keras_backend: str | None,
    files: tuple[str, ...],
) -> None:
    """Check changed decay rule/policy files (FILES, as pre-commit passes them) against a model.

    Each check is ``decay-audit check`` exactly as on the command line; the exit code is the worst."""
    worst = 0
    for command in check_commands(models, target, files, rules, policy, preset, keras_backend):
        result = subprocess.run([sys.executable, "-m", "decay_audit.cli", *command])
        worst = max(worst, result.returncode)
    sys.exit(worst)


if __name__ == "__main__":
    main(prog_name="python -m decay_audit.integrations.precommit")
