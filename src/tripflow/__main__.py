from tripflow.cli.main import app

app(prog_name="tripflow")
