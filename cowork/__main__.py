from cowork.cli.app import run

run()
