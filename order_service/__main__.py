from order_service.ops.cli import main

main()
