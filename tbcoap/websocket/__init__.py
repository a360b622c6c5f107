"""ThingsBoard's WebSocket API on the HTTP port: ``protocol`` (autobahn connections, keys, limits),
``commands`` (the JSON of commands and updates), ``session`` (one connection's subscriptions),
``entitydata`` (ThingsBoard 4's ENTITY_DATA), ``reads`` (history answers)."""
