"""The command line: click commands that parse, call the API and hand results to
render. Nothing else lives here."""
