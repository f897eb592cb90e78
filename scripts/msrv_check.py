"""Reads `cargo metadata` on stdin; checks the MSRV given as argv[1].

Every workspace crate must declare exactly the MSRV (inherited from the
workspace); no dependency may declare a newer `rust-version`.
"""
import json
import sys


def version(text):
    parts = [int(x) for x in text.split(".")]
    return tuple(parts + [0] * (3 - len(parts)))


def main():
    msrv = version(sys.argv[1])
    meta = json.load(sys.stdin)
    members = set(meta["workspace_members"])
    problems = []
    newest = ((0, 0, 0), "none")
    for p in meta["packages"]:
        declared = p.get("rust_version")
        if p["id"] in members:
            if declared is None or version(declared) != msrv:
                problems.append(
                    f"{p['name']} (workspace crate) has rust-version {declared}: "
                    "add rust-version.workspace = true"
                )
        elif declared:
            newest = max(newest, (version(declared), f"{p['name']} {p['version']}"))
            if version(declared) > msrv:
                problems.append(f"{p['name']} {p['version']} needs Rust {declared}")
    if problems:
        print("\n".join(problems), file=sys.stderr)
        sys.exit(1)
    print(
        f"MSRV {sys.argv[1]}: every workspace crate inherits it; the newest Rust a "
        f"dependency needs is {'.'.join(map(str, newest[0]))} ({newest[1]})"
    )


main()
