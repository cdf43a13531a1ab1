from litgpt_inheritune.cli import main

main()
