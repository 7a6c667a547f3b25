"""One package per API dialect: HTTP in, shared.services, HTTP out. No database access here."""
