from continual_adapters.cli import main

main()
