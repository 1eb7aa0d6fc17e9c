"""Well-known credential formats, masked by :mod:`shardflow.security.redact`.

One line per format: its name, a pattern over lowered text whose group ``s`` is the
secret (what precedes it is kept, so a masked token still says what it was), and an
example the tests check is masked. Each pattern starts with a literal character, which
keeps the one compiled expression fast.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["TOKEN_FORMATS", "TokenFormat", "token_branches"]


@dataclass(frozen=True)
class TokenFormat:
    """A well-known credential format: ``pattern`` is matched against the lowered text
    and starts with a literal; its group ``s`` is masked, what precedes it is kept (so a
    masked token still says what it was). ``example`` is checked to be masked by the
    tests. Adding a format is one line here."""

    name: str
    pattern: str
    example: str


TOKEN_FORMATS = (
    TokenFormat(
        "Slack webhook URL",
        r"hooks\.slack\.com/(?:services|workflows|triggers)/(?P<s>[a-z0-9_/-]{8,})",
        "https://hooks.slack.com/services/T0000000/B0000000/" + "x" * 24,
    ),
    TokenFormat("Slack token", r"xox[abeoprs]-(?P<s>[a-z0-9-]{10,})", "xoxb-1234-5678-" + "a" * 24),
    TokenFormat("Slack app token", r"xapp-(?P<s>[a-z0-9-]{10,})", "xapp-1-A0000-" + "1" * 20),
    TokenFormat("GitHub token", r"gh[oprsu]_(?P<s>[a-z0-9]{30,})", "ghp_" + "A1b2" * 9),
    TokenFormat(
        "GitHub fine-grained token",
        r"github_pat_(?P<s>[a-z0-9_]{22,})",
        "github_pat_" + "1A_b" * 20,
    ),
    TokenFormat("GitLab token", r"glpat-(?P<s>[a-z0-9_-]{20,})", "glpat-" + "x1Y2" * 5),
    TokenFormat("Stripe key", r"[rs]k_(?:live|test)_(?P<s>[a-z0-9]{10,})", "sk_live_" + "4eC3" * 6),
    TokenFormat("Stripe webhook secret", r"whsec_(?P<s>[a-z0-9]{20,})", "whsec_" + "a1B2" * 8),
    TokenFormat("Google API key", r"aiza(?P<s>[a-z0-9_-]{35})", "AIza" + "Sy0-" * 8 + "abc"),
    TokenFormat("npm token", r"npm_(?P<s>[a-z0-9]{36})", "npm_" + "a1B2" * 9),
    TokenFormat("PyPI token", r"pypi-(?P<s>[a-z0-9_-]{40,})", "pypi-AgEIcHlwaS5vcmc" + "x" * 40),
    TokenFormat(
        "SendGrid key",
        r"sg\.(?P<s>[a-z0-9_-]{16,}\.[a-z0-9_-]{16,})",
        "SG." + "a" * 22 + "." + "b" * 43,
    ),
    TokenFormat(
        "JSON Web Token",
        r"eyj[a-z0-9_-]{8,}\.(?P<s>eyj[a-z0-9_-]{8,}\.[a-z0-9_-]{8,})",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    ),
)


def token_branches() -> str:
    """The formats as branches of the one expression, group ``s`` renamed per format."""
    return "".join(
        "|" + f.pattern.replace("(?P<s>", f"(?P<t{i}>", 1) for i, f in enumerate(TOKEN_FORMATS)
    )
