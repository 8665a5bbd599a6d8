from services.drift.app import main

main()
