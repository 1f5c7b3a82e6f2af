from chatlake.cli import main

main()
