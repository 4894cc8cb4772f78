from intercom_gateway.cli.main import main

main()
