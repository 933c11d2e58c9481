"""What a user gets from the built wheel, checked from outside the checkout.

Run by python/test.sh with the interpreter of a fresh venv the wheel was installed into:

    check_install.py REPO WHEEL_VERSION [--with-client]

It fails (exit 1, naming what is wrong) unless the package imported is the installed one, every
documented name is reachable from `import kubeleash` (`kubeleash.kubernetes` included, on first
use), the stubs and the typed marker ship, and the engine works. Without `--with-client` the
`kubernetes` extra is not installed, and `kubeleash.kubernetes` must say how to install it.
"""

import ast
import sys
from pathlib import Path

repo, version = Path(sys.argv[1]).resolve(), sys.argv[2]
with_client = "--with-client" in sys.argv[3:]
problems = []

import kubeleash  # noqa: E402

where = Path(kubeleash.__file__).resolve()
if repo in where.parents:
    problems.append(f"kubeleash was imported from the checkout ({where}), not the install")
if kubeleash.__version__ != version:
    problems.append(f"__version__ is {kubeleash.__version__!r}, the wheel is {version!r}")
for marker in ("py.typed", "__init__.pyi"):
    if not where.with_name(marker).exists():
        problems.append(f"{marker} is not in the installed package")

# Every name the stubs document (classes, functions, variables, __all__) but the TypedDicts,
# which exist for type checkers only.
tree = ast.parse(where.with_name("__init__.pyi").read_text())
documented = set(kubeleash.__all__)
for node in tree.body:
    if isinstance(node, ast.ClassDef) and not any(ast.unparse(b).endswith("TypedDict") for b in node.bases):
        documented.add(node.name)
    elif isinstance(node, ast.FunctionDef):
        documented.add(node.name)
for name in sorted(documented):
    if not hasattr(kubeleash, name):
        problems.append(f"kubeleash.{name} is documented but missing")

policy = kubeleash.Policy.from_yaml(
    "apiVersion: kubeleash.dev/v1alpha1\nkind: Policy\nmetadata: {name: p}\n"
    "spec:\n  rules:\n  - {name: no-secrets, effect: deny, verbs: [get], resources: [secrets]}\n"
)
decision = policy.evaluate("GET", "/api/v1/namespaces/dev/secrets/db", user="a", groups=[])
if (decision.effect, decision.rule) != ("deny", "no-secrets"):
    problems.append(f"the engine decided {decision.effect}/{decision.rule}, not deny/no-secrets")

if with_client:
    for name in ("connect", "connect_aio", "transport", "SENTINEL_HOST"):
        if not hasattr(kubeleash.kubernetes, name):
            problems.append(f"kubeleash.kubernetes.{name} is missing")
    import kubernetes.client

    if not issubclass(kubeleash.kubernetes._k8s.ApiClient, kubernetes.client.ApiClient):
        problems.append("kubeleash.kubernetes does not use the installed official client")
    client_home = Path(kubernetes.__file__).resolve()
    if repo in client_home.parents:
        problems.append(f"the official client came from the checkout ({client_home})")
else:
    try:
        kubeleash.kubernetes
        problems.append("kubeleash.kubernetes imported without the official client installed")
    except ImportError as e:
        if "pip install" not in str(e):
            problems.append(f"without the client, the error does not say what to install: {e}")

if problems:
    print("the installed wheel is not what a user needs:", *problems, sep="\n  ", file=sys.stderr)
    sys.exit(1)
print(f"installed wheel {version} at {where.parent}: {len(documented)} documented names reachable"
      + (", kubeleash.kubernetes with the official client" if with_client else ", the client extra optional"))
