from lossforge.cli import app

app(prog_name="lossforge")
