from rnnexp.cli.main import main

main()
