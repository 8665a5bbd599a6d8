from services.calibrator.app import main

main()
