from order_service.webhooks.worker import main

main()
