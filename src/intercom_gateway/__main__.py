from intercom_gateway.cli import main

main()
