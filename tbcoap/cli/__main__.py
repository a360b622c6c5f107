"""``python -m tbcoap.cli``: the same as the ``tbcoap`` command."""

from tbcoap.cli.main import main

main()
