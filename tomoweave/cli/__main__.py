from tomoweave.cli import app

app()
