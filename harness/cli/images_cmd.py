"""xenrig images: build (or verify and reuse) the cached images."""

from __future__ import annotations

import shutil

from harness import paths


def register(sub) -> None:
    p = sub.add_parser("images", help="build or verify the cached images (Xen, dom0, guest)")
    p.add_argument("--rebuild", action="store_true", help="throw the cache away and build everything again")
    p.add_argument("--prune", action="store_true", help="delete cached images other than the current ones")
    p.set_defaults(handler=handle)


def handle(args) -> int:
    # Imported here, not at the top: building the parser (xenrig --help, check, nightly) must not load the
    # whole stack.
    from harness import images
    from harness.images.cache import Store
    from harness.stages import ConsoleProgress, Timeline

    store = Store(paths.cache_dir())
    if args.rebuild:
        shutil.rmtree(store.root, ignore_errors=True)
    log_dir = paths.cache_dir() / "logs"
    built = images.ensure(Timeline([ConsoleProgress()]), log_dir)
    for a in built.all():
        size = sum(f.stat().st_size for f in a.path.iterdir() if f.is_file()) / (1 << 20)
        state = "reused (hashes verified)" if a.reused else "built"
        print(f"{a.name:6} {a.key}  {size:8.1f} MiB  {state}  {a.path}")
    if args.prune:
        for d in store.prune({a.path.name for a in built.all()}):
            print(f"pruned {d}")
    print(f"build logs: {log_dir}")
    return 0
