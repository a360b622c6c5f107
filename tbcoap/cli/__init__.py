"""``tbcoap``: the admin command line over the REST API (see tbcoap.cli.main)."""
