from caffessd.cli import main

main()
