"""`python -m tripflow`: the same command as `tripflow`."""

from tripflow.cli.main import main

if __name__ == "__main__":  # a multiprocessing spawn re-imports this module: no CLI then
    main()
