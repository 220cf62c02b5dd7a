#!/usr/bin/env python3
"""Tests of dev/check_links.py: `python3 dev/test_check_links.py`.

Each test writes a small repository (a README.md and docs/) into a
temporary folder and runs the checker on it as `make test` does, as a
program, then looks at its exit status and what it printed.
"""

import subprocess
import sys
import tempfile
import textwrap
import unittest
from pathlib import Path

CHECKER = Path(__file__).resolve().parent / "check_links.py"


class CheckLinks(unittest.TestCase):
    def repo(self, files):
        """A temporary repository holding `files` ({path: text})."""
        folder = tempfile.TemporaryDirectory()
        self.addCleanup(folder.cleanup)
        root = Path(folder.name)
        for path, text in files.items():
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            (root / path).write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        return root

    def check(self, root, *files):
        run = subprocess.run([sys.executable, str(CHECKER), "--root", str(root), *files],
                             capture_output=True, text=True, cwd=root)
        return run.returncode, run.stdout + run.stderr

    def test_a_good_file_link_and_anchor_pass(self):
        root = self.repo({
            "README.md": """
                # Project

                See [the API](docs/api.md), [its routes](docs/api.md#the-routes-get-and-put)
                and [the template](infra/template.yaml), a [folder](docs/) and
                [a page elsewhere](https://example.com/x#y).
                """,
            "docs/api.md": """
                # API

                ## The routes: `GET` and *PUT*

                Back to [the README](../README.md#project).
                """,
            "infra/template.yaml": "Resources: {}\n",
        })
        status, out = self.check(root)
        self.assertEqual(status, 0, out)
        self.assertEqual(out.strip(), "links: 5 checked in 2 files, none dead")

    def test_a_broken_anchor_fails_naming_the_file_and_line(self):
        root = self.repo({
            "README.md": """
                # Project

                Fine: [API](docs/api.md#api).
                Broken: [billing](docs/api.md#billing-truth-stripe).
                """,
            "docs/api.md": "# API\n",
        })
        status, out = self.check(root)
        self.assertEqual(status, 1, out)
        self.assertIn("README.md:4: docs/api.md#billing-truth-stripe: no heading or anchor #billing-truth-stripe in docs/api.md", out)
        self.assertNotIn("#api:", out)

    def test_a_missing_file_fails(self):
        root = self.repo({
            "README.md": "# Project\n",
            "docs/a.md": "# A\n\nSee [the tokens](tokens.md) and ![a picture](img/arch.png).\n",
        })
        status, out = self.check(root)
        self.assertEqual(status, 1, out)
        self.assertIn("docs/a.md:3: tokens.md: no such file or directory", out)
        self.assertIn("docs/a.md:3: img/arch.png: no such file or directory", out)

    def test_links_in_fenced_code_and_inline_code_are_ignored(self):
        root = self.repo({
            "README.md": """
                # Project

                ```markdown
                [dead](nowhere.md#at-all)
                ```

                ~~~
                [dead](nowhere.md)
                ~~~

                Write a link as `[text](nowhere.md)`; this one is real: [me](#project).
                """,
        })
        status, out = self.check(root)
        self.assertEqual(status, 0, out)
        self.assertIn("links: 1 checked in 1 files, none dead", out)

    def test_duplicate_headings_get_numbered_anchors(self):
        root = self.repo({
            "README.md": """
                # Project

                [first](docs/guide.md#setup), [second](docs/guide.md#setup-1),
                [third](docs/guide.md#setup-2).
                """,
            "docs/guide.md": """
                # Guide

                ## Setup

                ## Setup

                ## Setup
                """,
        })
        status, out = self.check(root)
        self.assertEqual(status, 0, out)
        # and a fourth does not exist
        (root / "docs/guide.md").write_text("# Guide\n\n## Setup\n\n## Setup\n", encoding="utf-8")
        status, out = self.check(root)
        self.assertEqual(status, 1, out)
        self.assertIn("README.md:4: docs/guide.md#setup-2:", out)

    def test_a_bare_anchor_is_the_same_file(self):
        root = self.repo({
            "README.md": "# Project\n",
            "docs/ops.md": """
                # Operations

                See [deploy](#deploy), [alarms](#metrics-and-alarms) and [the
                dashboard](#dashboard), and [a named spot](#here).

                ## Deploy

                ## Metrics and alarms

                <a id="here"></a>
                """,
        })
        status, out = self.check(root)
        self.assertEqual(status, 1, out)
        self.assertIn("docs/ops.md:4: #dashboard: no heading or anchor #dashboard in docs/ops.md", out)
        self.assertEqual(out.count("docs/ops.md:"), 1, out)

    def test_files_named_on_the_command_line_are_the_only_ones_read(self):
        root = self.repo({
            "README.md": "# Project\n\n[dead](missing.md)\n",
            "docs/a.md": "# A\n\n[README](../README.md#project)\n",
        })
        status, out = self.check(root, "docs/a.md")
        self.assertEqual(status, 0, out)
        self.assertIn("links: 1 checked in 1 files, none dead", out)


if __name__ == "__main__":
    unittest.main(verbosity=2)
