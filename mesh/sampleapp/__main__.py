from mesh.sampleapp.server import main

main()
