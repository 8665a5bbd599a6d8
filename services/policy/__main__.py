from services.policy.app import main

main()
