from carcell.cli import main

main()
