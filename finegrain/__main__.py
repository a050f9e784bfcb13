from finegrain.cli.app import main

main()
