"""Create infra/.env from infra/.env.example, filling every empty value with a fresh random secret."""

from __future__ import annotations

import argparse
import base64
import logging
import os
import secrets
import sys
from pathlib import Path

logger = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent

# Airflow decodes this one as a Fernet key (urlsafe base64 of 32 bytes); any other format fails at start-up.
FERNET_VARIABLES = frozenset({"AIRFLOW_FERNET_KEY"})


def new_secret(name: str) -> str:
    """A random value suitable for the variable ``name``.

    Args:
        name: The variable name; Fernet-key variables get a Fernet key, everything else 32 random bytes
            as hex (safe in URLs, shell words and YAML without quoting).

    Returns:
        The new value.
    """
    if name in FERNET_VARIABLES:
        return base64.urlsafe_b64encode(os.urandom(32)).decode("ascii")
    return secrets.token_hex(32)


def render(example: str) -> tuple[str, list[str]]:
    """Fill the empty ``NAME=`` lines of an env file with new secrets, keeping everything else verbatim.

    Args:
        example: Text of ``.env.example``.

    Returns:
        The rendered text and the names that were filled, in file order.
    """
    lines: list[str] = []
    filled: list[str] = []
    for line in example.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#") and stripped.endswith("="):
            name = stripped[:-1].strip()
            lines.append(f"{name}={new_secret(name)}")
            filled.append(name)
        else:
            lines.append(line)
    return "\n".join(lines) + "\n", filled


def main(argv: list[str] | None = None) -> int:
    """Write the env file unless it exists; return the process exit status."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--example", type=Path, default=HERE / ".env.example", help="template to copy")
    parser.add_argument("--output", type=Path, default=HERE / ".env", help="env file to create")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    if args.output.exists():
        # Rotating secrets by accident would lock Airflow out of its own encrypted connections.
        logger.info("%s exists; leaving it unchanged (delete it to start over)", args.output)
        return 0
    if not args.example.is_file():
        logger.error("template %s not found", args.example)
        return 1
    text, filled = render(args.example.read_text(encoding="utf-8"))
    # Created 0600 from the start: the file holds every credential of the deployment.
    fd = os.open(args.output, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    logger.info("wrote %s with new values for %s", args.output, ", ".join(filled))
    return 0


if __name__ == "__main__":
    sys.exit(main())
