"""`imagenette-lab predict` (not yet implemented)."""

from imagenette_lab.errors import UserError


def register(sub):
    p = sub.add_parser("predict", help="(not yet implemented)")
    p.set_defaults(func=run)


def run(args):
    raise UserError("not implemented yet")
