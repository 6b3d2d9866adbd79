"""``python3 -m flagstone.lint`` prints docs/lint-rules.md."""

from flagstone.lint import rules_markdown

print(rules_markdown(), end="")
