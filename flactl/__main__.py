from flactl.commands import main

main()
